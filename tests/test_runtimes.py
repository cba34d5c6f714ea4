"""The ONNX Runtime runtime against the PyTorch one, on real (tiny, random) exported transformers."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from inbedder_index import InBedder, InstructionIndex  # noqa: E402
from inbedder_index.errors import ModelMismatchError  # noqa: E402
from inbedder_index.runtimes import ort  # noqa: E402
from tiny_models import make_model  # noqa: E402

from test_encoder import INSTRUCTION, TEXTS  # noqa: E402  (the same texts: short, truncated, empty, ...)

INSTRUCTIONS = [INSTRUCTION, "How does the customer feel?"]


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """One model cache for the module: each tiny model is exported once."""
    return tmp_path_factory.mktemp("model-cache")


def encoder(model, tokenizer, style, cache_dir, **kwargs):
    return InBedder.from_model(model, tokenizer, model_id=f"tiny-{style}", max_length=96, batch_size=3,
                               cache_dir=cache_dir, **kwargs)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def test_onnx_equals_torch_single_shared_and_answers(tiny, graphs):
    """Same vectors and answers as PyTorch: one instruction, several (shared prefix on causal models)."""
    style, model, tokenizer = tiny
    eager = encoder(model, tokenizer, style, graphs)
    onnx = encoder(model, tokenizer, style, graphs, runtime="onnx")
    assert onnx.runtime.name == "onnx" and onnx.fingerprint == eager.fingerprint
    expected = eager.encode(TEXTS, INSTRUCTIONS, return_answers=True)
    got = onnx.encode(TEXTS, INSTRUCTIONS, return_answers=True)
    for item in INSTRUCTIONS:
        assert min_cosine(got[item][0], expected[item][0]) >= 0.9999, (style, item)
        assert got[item][1] == expected[item][1], (style, item)
        one_at_a_time = onnx.encode(TEXTS, item)  # a single pass, no shared prefix
        assert min_cosine(one_at_a_time, got[item][0]) >= 0.9999, (style, item)
    single = onnx.encode(TEXTS[3], INSTRUCTIONS[0])  # batch of one
    assert min_cosine(single[None], expected[INSTRUCTIONS[0]][0][3][None]) >= 0.9999


def test_export_is_cached_per_fingerprint(graphs, monkeypatch):
    model, tokenizer = make_model("llama")
    first = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    record = json.loads((first.runtime.entry / "GRAPH.json").read_text())
    assert record["kind"] == "causal" and {"model.onnx", "model.onnx.data"} <= set(record["files"])

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model's graph")

    monkeypatch.setattr(ort, "export_graph", no_export)
    again = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    assert again.runtime.entry == first.runtime.entry
    np.testing.assert_allclose(again.encode(TEXTS, INSTRUCTIONS[0]), first.encode(TEXTS, INSTRUCTIONS[0]), atol=1e-6)
    other_model, other_tokenizer = make_model("llama", seed=1)  # other weights: another fingerprint, another graph
    with pytest.raises(AssertionError, match="exported again"):
        encoder(other_model, other_tokenizer, "llama", graphs, runtime="onnx")


@pytest.mark.parametrize(("variant", "damage"), [("fp32", "flip a byte"), ("int8", "truncate")])
def test_corrupt_graph_is_detected_and_rebuilt(graphs, tmp_path, caplog, variant, damage):
    """A changed byte fails the sha256 check, a short file the size check: either is rebuilt, never used."""
    model, tokenizer = make_model("llama")
    cache = tmp_path / "cache"
    shutil.copytree(graphs, cache, ignore=shutil.ignore_patterns("*.lock"))  # the module's graphs, exported already
    options = {"runtime": "onnx", "quantize": "int8" if variant == "int8" else None}
    entry = encoder(model, tokenizer, "llama", cache, **options).runtime.entry
    weights = entry / "model.onnx.data"
    if damage == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    with caplog.at_level(logging.INFO, logger="inbedder_index.runtimes.ort"):
        rebuilt = encoder(model, tokenizer, "llama", cache, **options)
    messages = [record.getMessage() for record in caplog.records]
    assert any("unusable" in m and str(entry) in m for m in messages), messages
    assert any(("exporting" if variant == "fp32" else "quantising") in m for m in messages), messages
    recorded = json.loads((entry / "GRAPH.json").read_text())["files"]["model.onnx.data"]
    assert weights.stat().st_size == recorded["size"] and ort.sha256_file(weights) == recorded["sha256"]
    reference = encoder(model, tokenizer, "llama", graphs, **options)  # the undamaged graph
    np.testing.assert_allclose(rebuilt.encode(TEXTS, INSTRUCTIONS[0]), reference.encode(TEXTS, INSTRUCTIONS[0]),
                               atol=1e-5)


def test_int8_changes_the_fingerprint_and_an_fp32_index_refuses_it(graphs, tmp_path):
    model, tokenizer = make_model("llama")
    fp32 = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    int8 = encoder(model, tokenizer, "llama", graphs, runtime="onnx", quantize="int8")
    assert int8.runtime.quantize == "int8" and int8.runtime.entry != fp32.runtime.entry
    assert int8.fingerprint != fp32.fingerprint
    record = json.loads((int8.runtime.entry / "GRAPH.json").read_text())
    assert record["quantized_matmuls"] > 0  # int8 weights really run
    vectors, reference = int8.encode(TEXTS, INSTRUCTIONS[0]), fp32.encode(TEXTS, INSTRUCTIONS[0])
    assert not np.array_equal(vectors, reference) and min_cosine(vectors, reference) > 0.99
    with InstructionIndex.open(tmp_path / "idx", model=fp32) as index:
        index.add([{"id": str(i), "text": text} for i, text in enumerate(TEXTS)])
        index.add_instruction(INSTRUCTIONS[0])
    with InstructionIndex.open(tmp_path / "idx", model=encoder(model, tokenizer, "llama", graphs)) as index:
        assert len(index.search("a refund", INSTRUCTIONS[0], k=2)) == 2  # torch and onnx fp32 are one model
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        InstructionIndex.open(tmp_path / "idx", model=int8)


def test_int8_settings_choose_the_float_matmuls(graphs):
    onnx = pytest.importorskip("onnx")
    model, tokenizer = make_model("llama")
    entry = encoder(model, tokenizer, "llama", graphs, runtime="onnx").runtime.entry
    matmuls = ort._weight_matmuls(onnx.load(str(entry / "model.onnx"), load_external_data=False).graph)
    paths = [path for _, path in matmuls]
    assert len(paths) == 2 * 7 and all(path.startswith("backbone.layers.") for path in paths)  # q k v o gate up down
    assert ort._excluded(matmuls, ort.Int8Settings()) == []
    no_attention = ort._excluded(matmuls, ort.Int8Settings(float_modules=("self_attn",)))
    assert len(no_attention) == 2 * 4 and all("self_attn" in dict(matmuls)[name] for name in no_attention)
    last = ort._excluded(matmuls, ort.Int8Settings(float_modules=(r"layers\.1\.", "down_proj")))
    assert len(last) == 7 + 1 and {dict(matmuls)[name] for name in last} >= {"backbone.layers.0.mlp.down_proj"}
    assert ort._excluded(matmuls, ort.Int8Settings(float_end_layers=1)) == []  # 2 layers: too few to spare ends
    default = ort._excluded(matmuls, ort.INT8)
    assert sorted(dict(matmuls)[name] for name in default) == [f"backbone.layers.{i}.mlp.down_proj" for i in (0, 1)]
    assert ort.Int8Settings().tag != ort.Int8Settings(float_modules=("down_proj",)).tag


def test_threads_follow_torch(graphs):
    model, tokenizer = make_model("llama")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        onnx = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    finally:
        torch.set_num_threads(previous)
    assert onnx.runtime.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"runtime": "tensorrt"}, "unknown runtime"),
    ({"runtime": "onnx", "quantize": "int4"}, "unknown quantize"),
    ({"quantize": "int8"}, "needs runtime='onnx'"),
    ({"runtime": "onnx", "device": "cuda"}, "runs on the CPU"),
])
def test_bad_runtime_options_name_the_value(kwargs, message, graphs):
    model, tokenizer = make_model("llama")
    with pytest.raises(ValueError, match=message):
        encoder(model, tokenizer, "llama", graphs, **kwargs)
