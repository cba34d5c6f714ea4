"""A fast, quiet start: the merged-adapter cache (merge once, verify on every load, rebuild what is
corrupt, no peft afterwards), a cheap ``import inbedder_index``, and quiet CLI output."""

from __future__ import annotations

import hashlib
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
    "a record that is []": (lambda e: (e / "MERGED.json").write_text("[]"), "does not match"),
    "a record whose files are []": (lambda e: _edit_record(e, lambda r: r.update(files=[])), "does not list"),
    "a record naming a file outside": (lambda e: _edit_record(e, lambda r: r["files"].update(
        {"../outside": {"size": 1, "sha256": "0" * 64}})), "does not list"),
    "a record with a size that is text": (lambda e: _edit_record(e, lambda r: r["files"]["config.json"].update(
        size="12")), "does not list"),
    "a pickle dropped in": (lambda e: (e / "pytorch_model.bin").write_bytes(b"pickle"), "never written"),
    "a weights file swapped for a link": (lambda e: _swap_for_link(e / "model.safetensors"), "link"),
}


def _edit_record(entry: Path, change) -> None:
    record = json.loads((entry / "MERGED.json").read_text())
    change(record)
    (entry / "MERGED.json").write_text(json.dumps(record))


def _swap_for_link(file: Path) -> None:
    """The file replaced by a link to a same-content copy elsewhere (links are never followed)."""
    copy = file.parent.parent / f"copy-of-{file.name}"
    copy.write_bytes(file.read_bytes())
    file.unlink()
    file.symlink_to(copy)


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


TORCH = "torch"  # the ONNX path skips the merged model once its graph is cached: load the merged entry each time


def adapter_entries(cache: Path) -> dict[str, Path]:
    """The entry of each adapter folder (named ``adapter_*``), by folder name."""
    return {p.name.rsplit("-", 1)[0]: p for p in (cache / "merged").glob("adapter_*-*") if p.is_dir()}


SWAPS = {
    "the two entries swapped": lambda a, b: (a.rename(a.with_name("tmp")), b.rename(a), a.with_name("tmp").rename(b)),
    "an entry replaced by a link to the other": lambda a, b: (shutil.rmtree(a), a.symlink_to(b)),
    "an entry replaced by a file": lambda a, b: (shutil.rmtree(a), a.write_text("not a folder")),
}


@pytest.mark.parametrize("swap", list(SWAPS))
def test_a_swapped_entry_is_rebuilt_not_blamed_on_the_hub(folders, swap, caplog) -> None:
    base, _, cache = folders
    first = save_adapter(base, base.parent / "adapter_a", seed=1)
    second = save_adapter(base, base.parent / "adapter_b", seed=2)
    references = {"adapter_a": merged_by_peft(base, first), "adapter_b": merged_by_peft(base, second)}
    for adapter in (first, second):
        InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH)
    built = adapter_entries(cache)
    SWAPS[swap](built["adapter_a"], built["adapter_b"])
    with caplog.at_level(logging.WARNING, logger="inbedder_index.adapters"):
        for adapter in (first, second):
            vectors = InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH).encode(TEXTS, FEEL)
            np.testing.assert_allclose(vectors, references[adapter.name], atol=1e-6)
    assert any("rebuilding" in r.getMessage() for r in caplog.records)
    assert adapter_entries(cache) == built and not any(p.is_symlink() for p in built.values())


def _rewrite_in_place(file: Path, content: bytes) -> None:
    """New bytes into the same inode, with the old modification time put back (as rsync -t or a restore)."""
    before = file.stat()
    assert len(content) == before.st_size
    with open(file, "r+b") as handle:
        handle.write(content)
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = file.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_an_adapter_rewritten_in_place_with_its_old_mtime_is_merged_again(folders, tmp_path, monkeypatch) -> None:
    from inbedder_index import adapters

    monkeypatch.setattr(adapters, "_SETTLE_NS", 0)  # remember even just-written files, so the memo is used
    base, adapter, cache = folders
    weights = adapter / "adapter_model.safetensors"
    old = InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH).encode(TEXTS, FEEL)
    memo = json.loads((cache / "merged" / "digests.json").read_text())
    assert str(weights.resolve()) in memo  # the next load trusts the stat stamp ...
    retrained = save_adapter(base, tmp_path / "retrained", seed=2)
    _rewrite_in_place(weights, (retrained / "adapter_model.safetensors").read_bytes())
    new = InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH).encode(TEXTS, FEEL)  # ctime moved
    np.testing.assert_allclose(new, merged_by_peft(base, adapter), atol=1e-6)
    assert not np.allclose(new, old, atol=1e-3)
    assert len(entries(cache)) == 1  # the entry of the old weights went


def test_a_file_written_just_now_is_not_remembered(folders) -> None:
    """Within one timestamp tick a second change could leave every stamp the same: hash it again next time."""
    _, adapter, cache = folders
    weights = adapter / "adapter_model.safetensors"
    os.utime(weights)  # changed now
    InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH)
    memo_file = cache / "merged" / "digests.json"
    assert str(weights.resolve()) not in (json.loads(memo_file.read_text()) if memo_file.exists() else {})


@pytest.mark.parametrize("memo", ["[]", "{not json", '{"/x": "garbage", "/y": [1, 2, 3]}'])
def test_a_malformed_digest_memo_is_replaced_not_fatal(folders, memo) -> None:
    base, adapter, cache = folders
    reference = merged_by_peft(base, adapter)
    (cache / "merged").mkdir(parents=True)
    (cache / "merged" / "digests.json").write_text(memo)
    encoder = InBedder(str(adapter), cache_dir=cache, max_length=96, runtime=TORCH)
    np.testing.assert_allclose(encoder.encode(TEXTS, FEEL), reference, atol=1e-6)
    assert isinstance(json.loads((cache / "merged" / "digests.json").read_text()), dict)


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
