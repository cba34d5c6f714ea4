"""A fast, quiet start: the merged-adapter cache (merge once, verify on every load, rebuild what is
corrupt, no peft afterwards), a cheap ``import inbedder_index``, and quiet CLI output."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

peft = pytest.importorskip("peft")

from inbedder_index import InBedder  # noqa: E402
from tiny_models import make_model  # noqa: E402

FEEL = "How does the customer feel?"
TEXTS = ["I am furious, the parcel never arrived.", "Thanks, it works!", ""]


def save_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A random (non-zero) LoRA adapter over the tiny Llama at ``base``, naming it as its base."""
    model, _ = make_model("llama")
    torch.manual_seed(seed)
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"],
                             init_lora_weights=False)
    peft.get_peft_model(model, config).save_pretrained(folder)
    settings = json.loads((folder / "adapter_config.json").read_text())
    settings["base_model_name_or_path"] = str(base)
    (folder / "adapter_config.json").write_text(json.dumps(settings))
    return folder


def merged_by_peft(base: Path, adapter: Path) -> np.ndarray:
    """The reference: the adapter merged in memory with peft, as every load did before the cache."""
    model, tokenizer = make_model("llama")
    merged = peft.PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    return InBedder.from_model(merged, tokenizer, max_length=96).encode(TEXTS, FEEL)


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path, Path]:
    base = tmp_path / "base"
    model, tokenizer = make_model("llama")
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base, save_adapter(base, tmp_path / "adapter", seed=1), tmp_path / "cache"


def entries(cache: Path) -> list[Path]:
    return sorted(p for p in (cache / "merged").glob("adapter-*") if p.is_dir())


def load_in_fresh_process(adapter: Path, cache: Path) -> dict:
    script = textwrap.dedent(f"""
        import json, sys
        from inbedder_index import InBedder
        encoder = InBedder({str(adapter)!r}, cache_dir={str(cache)!r}, max_length=96)
        vectors = encoder.encode({TEXTS!r}, {FEEL!r})
        print(json.dumps({{"peft": "peft" in sys.modules, "fingerprint": encoder.fingerprint,
                          "vectors": vectors.tolist()}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_adapter_is_merged_once_and_later_loads_need_no_peft(folders) -> None:
    base, adapter, cache = folders
    reference = merged_by_peft(base, adapter)
    first = InBedder(str(adapter), cache_dir=cache, max_length=96)
    np.testing.assert_allclose(first.encode(TEXTS, FEEL), reference, atol=1e-6)
    [entry] = entries(cache)
    record = json.loads((entry / "MERGED.json").read_text())
    assert record["adapter"] == str(adapter.resolve()) and record["dtype"] == "float32"
    weights = [p.name for p in entry.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pkl", ".pth")]
    assert weights == ["model.safetensors"]  # never a pickle
    assert record["files"]["model.safetensors"]["sha256"] == \
        hashlib.sha256((entry / "model.safetensors").read_bytes()).hexdigest()
    later = load_in_fresh_process(adapter, cache)
    assert later["peft"] is False and later["fingerprint"] == first.fingerprint
    np.testing.assert_allclose(later["vectors"], reference, atol=1e-6)
    assert entries(cache) == [entry]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))  # same size, different weights


CORRUPTIONS = {
    "flipped weights": (lambda e: _flip(e / "model.safetensors"), "does not match its recorded sha256"),
    "truncated weights": (lambda e: os.truncate(e / "model.safetensors", 1000), "bytes"),
    "missing tokenizer": (lambda e: (e / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    "garbled record": (lambda e: (e / "MERGED.json").write_text("{not json"), "unreadable MERGED.json"),
    "no record (a merge cut short)": (lambda e: (e / "MERGED.json").unlink(), None),
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS))
def test_a_corrupt_or_partial_entry_is_rebuilt_never_used(folders, corrupt, caplog) -> None:
    base, adapter, cache = folders
    reference = merged_by_peft(base, adapter)
    InBedder(str(adapter), cache_dir=cache, max_length=96, runtime="torch")  # PyTorch loads the merged entry
    [entry] = entries(cache)
    damage, problem = CORRUPTIONS[corrupt]
    damage(entry)
    with caplog.at_level(logging.WARNING, logger="inbedder_index.adapters"):
        rebuilt = InBedder(str(adapter), cache_dir=cache, max_length=96, runtime="torch")
    np.testing.assert_allclose(rebuilt.encode(TEXTS, FEEL), reference, atol=1e-6)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    if problem is None:  # nothing recorded yet is a missing entry: built quietly
        assert warnings == []
    else:
        assert len(warnings) == 1 and problem in warnings[0] and "rebuilding" in warnings[0]
    assert entries(cache) == [entry]
    record = json.loads((entry / "MERGED.json").read_text())
    for name, expected in record["files"].items():
        assert hashlib.sha256((entry / name).read_bytes()).hexdigest() == expected["sha256"], name
    assert not [p for p in (cache / "merged").iterdir() if p.name.startswith(".merge-")]  # no staging left


def test_a_changed_adapter_gets_a_new_entry_and_the_stale_one_goes(folders) -> None:
    base, adapter, cache = folders
    InBedder(str(adapter), cache_dir=cache, max_length=96)
    [old] = entries(cache)
    save_adapter(base, adapter, seed=2)  # retrained in place
    reference = merged_by_peft(base, adapter)
    np.testing.assert_allclose(InBedder(str(adapter), cache_dir=cache, max_length=96).encode(TEXTS, FEEL),
                               reference, atol=1e-6)
    [new] = entries(cache)
    assert new != old and not old.exists()


def test_importing_the_package_loads_no_heavy_module() -> None:
    script = textwrap.dedent("""
        import sys
        import inbedder_index
        from inbedder_index import DEFAULT_MODEL, list_supported_models
        heavy = [m for m in ("torch", "transformers", "numpy", "faiss", "peft", "qdrant_client", "fastapi")
                 if m in sys.modules]
        assert DEFAULT_MODEL in [spec.name for spec in list_supported_models()]
        from inbedder_index import InBedder, connect  # the encoder is imported when first asked for ...
        print(heavy, "torch" in sys.modules or "transformers" in sys.modules, InBedder.__name__)  # ... without torch
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "False", "InBedder"]


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "INBEDDER_INDEX_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "inbedder_index.cli", *args], capture_output=True, text=True,
                          env=env, check=True)


def test_cli_output_is_the_answer_and_verbose_shows_the_rest(folders, tmp_path) -> None:
    _, adapter, cache = folders
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{i}", "text": f"message {i}: my parcel is late"}) + "\n"
                            for i in range(300)))
    index = str(tmp_path / "index")
    build = run_cli("build", index, "--input", str(docs), "--instruction", FEEL, "--model", str(adapter), cache=cache)
    assert "300 documents" in build.stdout
    assert "indexing" in build.stderr  # long work keeps its progress bar ...
    for noise in ("Loading weights", "Writing model shards", "Warning", "deprecated", "INFO"):  # ... loading does not
        assert noise not in build.stderr, build.stderr
    assert "exporting" in build.stderr  # the one-time export says what the wait is for
    search = run_cli("search", index, "my parcel is late", "--instruction", FEEL, "-k", "2", cache=cache)
    assert search.stderr == "" and search.stdout.splitlines()[0].split() == ["id", "score", "answer", "text"]
    verbose = run_cli("search", index, "my parcel is late", "--instruction", FEEL, "-k", "2", "-v", cache=cache)
    assert "ONNX graph" in verbose.stderr and verbose.stdout == search.stdout
