"""The ONNX Runtime runtime against the PyTorch one, on real (tiny, random) exported transformers:
same vectors and answers, a graph cache keyed by a digest of all the weights that rebuilds what
does not validate, and inference in fresh interpreters that never import torch or transformers."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from inbedder_index import InBedder, InstructionIndex  # noqa: E402
from inbedder_index.errors import ModelMismatchError  # noqa: E402
from inbedder_index.runtimes import export, ort  # noqa: E402
from inbedder_index.runtimes.tokenizer import FastTokenizer, TokenizerSpec, save_tokenizer  # noqa: E402
from tiny_models import make_model  # noqa: E402

from test_encoder import INSTRUCTION, TEXTS  # noqa: E402  (the same texts: short, truncated, empty, ...)

INSTRUCTIONS = [INSTRUCTION, "How does the customer feel?"]
HEAVY = ("torch", "transformers")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """One model cache for the module: each tiny model is exported once."""
    return tmp_path_factory.mktemp("model-cache")


def encoder(model, tokenizer, style, cache_dir, **kwargs):
    return InBedder.from_model(model, tokenizer, model_id=f"tiny-{style}", max_length=96, batch_size=3,
                               cache_dir=cache_dir, **kwargs)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)).min())


def save_model(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def fresh_python(script: str, **env: str) -> dict:
    """Run ``script`` in a new interpreter; it prints one JSON line last, to which the heavy modules
    it imported are added."""
    code = textwrap.dedent(script) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        _out = dict(result)
        _out["heavy"] = [m for m in {HEAVY!r} if m in _sys.modules]
        print(_json.dumps(_out))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onnx_equals_torch_single_shared_and_answers(tiny, graphs):
    """Same vectors and answers as PyTorch: one instruction, several (shared prefix on causal models)."""
    style, model, tokenizer = tiny
    eager = encoder(model, tokenizer, style, graphs)
    onnx = encoder(model, tokenizer, style, graphs, runtime="onnx")
    assert onnx.runtime.name == "onnx" and onnx.fingerprint == eager.fingerprint
    assert onnx.model is None and isinstance(onnx.tokenizer, FastTokenizer)  # the weights live in the graph alone
    expected = eager.encode(TEXTS, INSTRUCTIONS, return_answers=True)
    got = onnx.encode(TEXTS, INSTRUCTIONS, return_answers=True)
    for item in INSTRUCTIONS:
        assert min_cosine(got[item][0], expected[item][0]) >= 0.9999, (style, item)
        assert got[item][1] == expected[item][1], (style, item)
        one_at_a_time = onnx.encode(TEXTS, item)  # a single pass, no shared prefix
        assert min_cosine(one_at_a_time, got[item][0]) >= 0.9999, (style, item)
    single = onnx.encode(TEXTS[3], INSTRUCTIONS[0])  # batch of one
    assert min_cosine(single[None], expected[INSTRUCTIONS[0]][0][3][None]) >= 0.9999


def test_the_tokenizer_travels_without_transformers(tiny, tmp_path):
    """``tokenizers`` alone gives the Hugging Face tokenizer's ids, lengths and decoded answers."""
    _, _, tokenizer = tiny
    fast = FastTokenizer(tmp_path, save_tokenizer(tokenizer, tmp_path))
    texts = [*TEXTS, "<s> a written special token </s>", "über 42 ### Response:"]
    for special in (True, False):
        assert fast(texts, add_special_tokens=special)["input_ids"] == \
            tokenizer(texts, add_special_tokens=special)["input_ids"]
    assert fast(texts[0])["input_ids"] == tokenizer(texts[0])["input_ids"] and len(fast) == len(tokenizer)
    ids = tokenizer(texts[3])["input_ids"] + [tokenizer.eos_token_id, tokenizer.pad_token_id]
    assert fast.decode(ids, skip_special_tokens=True) == tokenizer.decode(ids, skip_special_tokens=True)
    assert (fast.pad_token_id, fast.eos_token_id, fast.mask_token_id) == \
        (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.mask_token_id)
    spec = TokenizerSpec.from_hf(tokenizer).as_record()
    assert TokenizerSpec.from_record(spec).as_record() == spec
    with pytest.raises(ValueError, match="wrong type"):
        TokenizerSpec.from_record({**spec, "vocab_size": "400"})


def test_export_is_cached_per_fingerprint(graphs, monkeypatch):
    model, tokenizer = make_model("llama")
    first = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    record = json.loads((first.runtime.entry / "GRAPH.json").read_text())
    assert record["kind"] == "causal" and {"model.onnx", "model.onnx.data", "tokenizer.json"} <= set(record["files"])
    assert record["exporter"] == export.DEFAULT_EXPORTER and record["probe_min_cosine"] >= 0.9999

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model's graph")

    monkeypatch.setattr(export, "export_graph", no_export)
    again = encoder(model, tokenizer, "llama", graphs, runtime="onnx")
    assert again.runtime.entry == first.runtime.entry
    np.testing.assert_allclose(again.encode(TEXTS, INSTRUCTIONS[0]), first.encode(TEXTS, INSTRUCTIONS[0]), atol=1e-6)
    other_model, other_tokenizer = make_model("llama", seed=1)  # other weights: another fingerprint, another graph
    with pytest.raises(AssertionError, match="exported again"):
        encoder(other_model, other_tokenizer, "llama", graphs, runtime="onnx")


def test_both_exporters_give_the_pytorch_model(tmp_path):
    """TorchScript (the default: seconds) and dynamo graphs pass the same check and give the same vectors."""
    pytest.importorskip("onnxscript")
    model, tokenizer = make_model("llama")
    for exporter in export.EXPORTERS:
        folder = tmp_path / exporter
        folder.mkdir()
        record = export.export_graph(model, tokenizer, "causal", folder, exporter=exporter)
        assert record["probe_min_cosine"] >= export.MIN_COSINE and record["exporter"] == exporter
    assert export.DEFAULT_EXPORTER == "torchscript"


def test_a_tied_head_keeps_one_copy_of_the_table(tmp_path):
    """OPT ties its LM head to the input embeddings: the graph holds the table once."""
    onnx = pytest.importorskip("onnx")
    model, tokenizer = make_model("opt")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    export.export_graph(model, tokenizer, "causal", tmp_path)
    table = model.get_input_embeddings().weight.detach().numpy()
    graph = onnx.load(str(tmp_path / "model.onnx")).graph
    copies = [init.name for init in graph.initializer if tuple(init.dims) in (table.shape, table.shape[::-1])]
    assert len(copies) == 1, copies


def _damage(entry: Path, how: str) -> None:
    record_file = entry / "GRAPH.json"
    record = json.loads(record_file.read_text())
    weights = max((entry / name for name in record["files"]), key=lambda p: p.stat().st_size)
    if how == "flip a byte":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif how == "truncate":
        with open(weights, "r+b") as handle:
            handle.truncate(weights.stat().st_size // 2)
    elif how == "[] as the record":
        record_file.write_text("[]")
    elif how == "edited shapes":
        record["past_shapes"] = [[heads + 1, size] for heads, size in record["past_shapes"]]
        record_file.write_text(json.dumps(record))
    elif how == "edited shapes and checksum":  # a consistent-looking record that lies about the graph
        record["past_shapes"] = [[heads + 1, size] for heads, size in record["past_shapes"]]
        record["checksum"] = ort._checksum(record)
        record_file.write_text(json.dumps(record))
    else:
        raise ValueError(how)


DAMAGE = [("fp32", "flip a byte", "sha256"), ("int8", "truncate", "bytes"), ("fp32", "[] as the record", "list"),
          ("fp32", "edited shapes", "checksum"), ("fp32", "edited shapes and checksum", "past_key_0 has shape"),
          ("int8", "[] as the record", "list")]


@pytest.mark.parametrize(("variant", "damage", "problem"), DAMAGE)
def test_a_damaged_graph_or_record_is_rebuilt_never_used(graphs, tmp_path, caplog, variant, damage, problem):
    """A changed byte fails the sha256 check, a short file the size check, a record that is not an
    object or does not match its checksum or its graph fails validation: each is rebuilt, never used."""
    model, tokenizer = make_model("llama")
    cache = tmp_path / "cache"
    shutil.copytree(graphs, cache, ignore=shutil.ignore_patterns("*.lock"))  # the module's graphs, exported already
    options = {"runtime": "onnx", "quantize": "int8" if variant == "int8" else None}
    entry = encoder(model, tokenizer, "llama", cache, **options).runtime.entry
    _damage(entry, damage)
    with caplog.at_level(logging.INFO, logger="inbedder_index.runtimes.ort"):
        rebuilt = encoder(model, tokenizer, "llama", cache, **options)
    messages = [record.getMessage() for record in caplog.records]
    assert any("unusable" in m and problem in m and str(entry) in m for m in messages), messages
    assert any(("exporting" if variant == "fp32" else "quantising") in m for m in messages), messages
    record = ort.parse_record(json.loads((entry / "GRAPH.json").read_text()), rebuilt.runtime.record.fingerprint,
                              "causal")
    for name, expected in record.files.items():
        assert (entry / name).stat().st_size == expected["size"] and ort.sha256_file(entry / name) == expected["sha256"]
    reference = encoder(model, tokenizer, "llama", graphs, **options)  # the undamaged graph
    np.testing.assert_allclose(rebuilt.encode(TEXTS, INSTRUCTIONS[0]), reference.encode(TEXTS, INSTRUCTIONS[0]),
                               atol=1e-5)


def test_a_graph_optimised_by_another_onnxruntime_is_not_loaded_as_it_is(graphs, tmp_path):
    """The saved optimised graph is ONNX Runtime's own format: another version optimises the portable graph again."""
    model, tokenizer = make_model("llama")
    cache = tmp_path / "cache"
    shutil.copytree(graphs, cache, ignore=shutil.ignore_patterns("*.lock"))
    entry = encoder(model, tokenizer, "llama", cache, runtime="onnx").runtime.entry
    record = json.loads((entry / "GRAPH.json").read_text())
    assert record["optimized_by"] == ort.import_optional("onnxruntime", "onnx").__version__
    assert (entry / ort.OPTIMIZED_FILE).is_file() and ort.OPTIMIZED_FILE in record["files"]
    record["optimized_by"] = "0.0.1"
    (entry / ort.OPTIMIZED_FILE).write_bytes(b"written by another version")  # never read ...
    record["files"][ort.OPTIMIZED_FILE] = {"size": 26, "sha256": ort.sha256_file(entry / ort.OPTIMIZED_FILE)}
    record["checksum"] = ort._checksum(record)
    (entry / "GRAPH.json").write_text(json.dumps(record))
    other = encoder(model, tokenizer, "llama", cache, runtime="onnx")  # ... the portable graph is
    assert other.runtime.entry == entry
    np.testing.assert_allclose(other.encode(TEXTS, INSTRUCTION), encoder(model, tokenizer, "llama", graphs,
                                                                         runtime="onnx").encode(TEXTS, INSTRUCTION),
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
    matmuls = [(name, path) for name, path in ort._weight_matmuls(onnx.load(str(entry / "model.onnx")).graph)
               if path != "head"]  # the LM head: never among the layers' matmuls
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
    ({"runtime": "torch", "quantize": "int8"}, "needs runtime='onnx'"),
    ({"runtime": "onnx", "device": "cuda"}, "runs on the CPU"),
])
def test_bad_runtime_options_name_the_value(kwargs, message, graphs):
    model, tokenizer = make_model("llama")
    with pytest.raises(ValueError, match=message):
        encoder(model, tokenizer, "llama", graphs, **kwargs)


# --------------------------------------------------------------------------- a model folder, as users load one


@pytest.fixture(scope="module")
def folder_model(tmp_path_factory):
    """A tiny Llama saved as a model folder, exported once into its own model cache by ``InBedder(folder)``."""
    root = tmp_path_factory.mktemp("folder-model")
    model, tokenizer = make_model("llama")
    folder = save_model(model, tokenizer, root / "tiny-llama")
    cache = root / "cache"
    first = InBedder(str(folder), cache_dir=cache, max_length=96)
    return folder, cache, first


def test_the_default_runtime_on_a_cpu_is_onnx_and_the_fingerprint_is_remembered(folder_model, monkeypatch):
    folder, cache, first = folder_model
    assert first.runtime.name == "onnx" and first.model is None
    assert list((cache / "onnx" / "sources").glob("*.json"))  # the fingerprint, remembered for these files
    from inbedder_index.runtimes import pytorch

    def no_digest(*args, **kwargs):
        raise AssertionError("the weights were loaded and digested again")

    monkeypatch.setattr(pytorch, "weights_digest", no_digest)
    again = InBedder(str(folder), cache_dir=cache, max_length=96)
    assert again.fingerprint == first.fingerprint and again.runtime.entry == first.runtime.entry
    torch_one = InBedder(str(folder), cache_dir=cache, max_length=96, runtime="torch")
    assert torch_one.runtime.name == "torch" and torch_one.fingerprint == first.fingerprint  # remembered too


def test_changing_a_few_embedding_rows_changes_the_fingerprint_and_rebuilds_the_graph(tmp_path):
    """A handful of tokens' rows edited in place: another fingerprint (not the old one remembered),
    another graph, other vectors; the untouched model's graph stays as it was."""
    model, tokenizer = make_model("llama")
    folder = save_model(model, tokenizer, tmp_path / "model")
    cache = tmp_path / "cache"
    before = InBedder(str(folder), cache_dir=cache, max_length=96)
    vectors = before.encode(TEXTS, INSTRUCTION)
    rows = tokenizer("refund parcel", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        model.get_input_embeddings().weight[rows] += 0.5
    model.save_pretrained(folder)  # rewritten in place, as a retrained model would be
    after = InBedder(str(folder), cache_dir=cache, max_length=96)
    assert after.fingerprint != before.fingerprint and after.runtime.entry != before.runtime.entry
    assert before.runtime.entry.is_dir() and min_cosine(after.encode(TEXTS, INSTRUCTION), vectors) < 0.9999
    in_memory = InBedder.from_model(model, tokenizer, max_length=96)
    assert in_memory.fingerprint == after.fingerprint  # the file and the tensors give one digest
    np.testing.assert_allclose(after.encode(TEXTS, INSTRUCTION), in_memory.encode(TEXTS, INSTRUCTION), atol=1e-5)


def test_search_and_answers_in_a_fresh_interpreter_import_neither_torch_nor_transformers(folder_model, tmp_path):
    folder, cache, first = folder_model
    index = tmp_path / "index"
    with InstructionIndex.open(index, model=first) as opened:
        opened.add([{"id": str(i), "text": text} for i, text in enumerate(TEXTS)])
        opened.add_instruction(INSTRUCTION)
    expected_vectors, expected_answers = InBedder(str(folder), cache_dir=cache, max_length=96,
                                                  runtime="torch").encode(TEXTS, INSTRUCTION, return_answers=True)
    encoded = fresh_python(f"""
        from inbedder_index import InBedder
        encoder = InBedder({str(folder)!r}, cache_dir={str(cache)!r}, max_length=96)
        vectors, answers = encoder.encode({TEXTS!r}, {INSTRUCTION!r}, return_answers=True)
        result = {{"vectors": vectors.tolist(), "answers": answers, "fingerprint": encoder.fingerprint}}
    """)
    assert encoded["heavy"] == [] and encoded["fingerprint"] == first.fingerprint
    assert encoded["answers"] == expected_answers
    assert min_cosine(np.array(encoded["vectors"], dtype=np.float32), expected_vectors) >= 0.9999
    searched = fresh_python(f"""
        import contextlib, io
        from inbedder_index.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            codes = [main(["search", {str(index)!r}, "my parcel never arrived", "--instruction", {INSTRUCTION!r},
                           "-k", "2", "--json"]), main(["info", {str(index)!r}]), main(["list", {str(index)!r}])]
        result = {{"codes": codes, "out": out.getvalue()}}
    """, INBEDDER_INDEX_CACHE=str(cache))
    assert searched["heavy"] == [] and searched["codes"] == [0, 0, 0]
    hits, _ = json.JSONDecoder().raw_decode(searched["out"])
    assert len(hits) == 2 and {hit["id"] for hit in hits} <= {str(i) for i in range(len(TEXTS))}
    assert first.fingerprint in searched["out"]  # info shows the model's fingerprint
    served = fresh_python(f"""
        from inbedder_index.serve import Service
        from inbedder_index.serve.app import create_app  # the HTTP layer, imported as serve imports it
        from langchain_inbedder import InBedderEmbeddings
        from llama_index_inbedder import InBedderEmbedding
        service = Service.open([{str(index)!r}])
        hits = service.indexes["index"].search("my parcel never arrived", {INSTRUCTION!r}, k=2)
        local = {{"model_kwargs": {{"cache_dir": {str(cache)!r}, "max_length": 96}}, "instruction": {INSTRUCTION!r}}}
        chain = InBedderEmbeddings(model={str(folder)!r}, **local).embed_query("a refund")
        llama = InBedderEmbedding(model={str(folder)!r}, **local).get_query_embedding("a refund")
        service.close()
        result = {{"hits": len(hits), "same": max(abs(a - b) for a, b in zip(chain, llama))}}
    """, INBEDDER_INDEX_CACHE=str(cache))
    assert served["heavy"] == [] and served["hits"] == 2 and served["same"] < 1e-6


def test_int8_is_made_and_run_without_torch(folder_model, tmp_path):
    folder, cache, first = folder_model
    own = tmp_path / "cache"
    shutil.copytree(cache, own, ignore=shutil.ignore_patterns("*.lock"))  # the float32 graph only
    result = fresh_python(f"""
        from inbedder_index import InBedder
        encoder = InBedder({str(folder)!r}, cache_dir={str(own)!r}, max_length=96, quantize="int8")
        vectors = encoder.encode({TEXTS!r}, {INSTRUCTION!r})
        result = {{"vectors": vectors.tolist(), "fingerprint": encoder.fingerprint,
                   "entry": str(encoder.runtime.entry)}}
    """)
    assert result["heavy"] == [] and "int8" in Path(result["entry"]).name
    assert result["fingerprint"] != first.fingerprint
    assert min_cosine(np.array(result["vectors"], dtype=np.float32), first.encode(TEXTS, INSTRUCTION)) > 0.99


def test_a_graph_lost_from_the_cache_is_exported_again(folder_model, tmp_path, caplog):
    """The fingerprint is remembered but its graph is gone (or damaged): PyTorch loads and exports it again."""
    folder, cache, first = folder_model
    own = tmp_path / "cache"
    shutil.copytree(cache, own, ignore=shutil.ignore_patterns("*.lock"))
    entry = own / "onnx" / first.runtime.entry.name
    (entry / "GRAPH.json").write_text("[]")
    with caplog.at_level(logging.INFO, logger="inbedder_index.runtimes.ort"):
        again = InBedder(str(folder), cache_dir=own, max_length=96)
    assert any("exporting" in record.getMessage() for record in caplog.records)
    assert again.runtime.entry == entry and again.fingerprint == first.fingerprint
    np.testing.assert_allclose(again.encode(TEXTS, INSTRUCTION), first.encode(TEXTS, INSTRUCTION), atol=1e-6)


def test_the_export_command_exports_once_and_then_needs_no_torch(tmp_path):
    model, tokenizer = make_model("opt")
    folder = save_model(model, tokenizer, tmp_path / "tiny-opt")
    run = """
        import contextlib, io, json
        from inbedder_index.cli import main
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(["export", {folder!r}, "--json"])
        result = {{"code": code, **json.loads(out.getvalue())}}
    """.format(folder=str(folder))
    first = fresh_python(run, INBEDDER_INDEX_CACHE=str(tmp_path / "cache"))
    assert first["code"] == 0 and first["heavy"] == list(HEAVY)  # the first export loads the model in PyTorch
    graph = Path(first["graph"])
    assert graph.parent == tmp_path / "cache" / "onnx" and (graph / "GRAPH.json").is_file()
    assert first["fingerprint"] == InBedder.from_model(model, tokenizer).fingerprint
    again = fresh_python(run, INBEDDER_INDEX_CACHE=str(tmp_path / "cache"))
    assert again["heavy"] == [] and again["graph"] == first["graph"] and again["fingerprint"] == first["fingerprint"]
