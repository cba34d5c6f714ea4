"""An index folder is untrusted input, and bad calls are refused before anything is written.

Crafted folders (links, planted pickles, lying FAISS headers), failing commands, and clumsy
calls: each gets a clear error naming the problem, and what is stored stays as it was.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from inbedder_index import InBedder, InstructionIndex
from inbedder_index.backends.faiss import FILENAME, MAGIC
from inbedder_index.errors import CollectionCorruptError, CorpusError, InBedderError
from inbedder_index.index import IndexClosedError
from inbedder_index.manifest import ManifestError
from inbedder_index.safepath import UnsafePathError
from test_index import DOCS, FEEL, WANT
from tiny_models import make_model


@pytest.fixture(scope="module")
def encoder() -> InBedder:
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)


@pytest.fixture
def built(tmp_path, encoder) -> Path:
    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder) as index:
        index.add(DOCS)
        index.add_instructions([FEEL, WANT])
    return path


def _cli(*args: str, user: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inbedder_index.cli", *args], capture_output=True, text=True,
                          timeout=120, user=user)


def _collection_file(path: Path, index: InstructionIndex, instruction: str) -> Path:
    return path / "faiss" / index._entry(instruction)["name"] / FILENAME


def _snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != "lock" and not p.name.endswith(("-wal", "-shm"))}


# ------------------------------------------------------------------ links and escapes


def _edit_manifest(path: Path, change) -> dict:
    """Apply ``change`` to the stored manifest (as a crafted or damaged folder would); returns it."""
    conn = sqlite3.connect(path / "corpus.sqlite")
    manifest = json.loads(conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0])
    change(manifest)
    conn.execute("UPDATE meta SET value=? WHERE key='manifest'", (json.dumps(manifest),))
    conn.commit()
    conn.close()
    return manifest



def test_a_linked_lock_is_refused_and_its_target_untouched(built, tmp_path, encoder):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    (built / "lock").unlink()
    (built / "lock").symlink_to(victim)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        InstructionIndex.open(built, model=encoder)
    assert victim.read_text() == "keep me"


def test_drop_never_deletes_through_a_linked_faiss_folder(built, tmp_path, encoder):
    outside = tmp_path / "outside"
    (outside / "victim").mkdir(parents=True)
    (outside / "victim" / "data.txt").write_text("keep me")
    with InstructionIndex.open(built, model=encoder) as index:
        name = index._entry(FEEL)["name"]
    (built / "faiss").rename(tmp_path / "real-faiss")
    (built / "faiss").symlink_to(outside)
    _edit_manifest(built, lambda manifest: manifest["collections"][FEEL].update(name="victim"))
    with pytest.raises(UnsafePathError):
        with InstructionIndex.open(built, model=encoder) as index:
            index.drop_instruction(FEEL)
    assert (outside / "victim" / "data.txt").read_text() == "keep me"
    assert name  # the real collection was never the target


def test_a_collection_name_that_escapes_the_folder_is_refused(built, encoder):
    _edit_manifest(built, lambda manifest: manifest["collections"][FEEL].update(name="../../etc"))
    with pytest.raises(ManifestError, match="unsafe collection name"):
        InstructionIndex.open(built, model=encoder)


# ------------------------------------------------------------------ nothing is unpickled


def _plant_pickle(folder: Path, marker: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    storage = folder / "collection" / "planted"
    storage.mkdir(parents=True)
    conn = sqlite3.connect(storage / "storage.sqlite")
    conn.execute("CREATE TABLE points (id TEXT, point BLOB)")
    conn.execute("INSERT INTO points VALUES (?, ?)", ("x", pickle.dumps(Exploit())))
    conn.commit()
    conn.close()
    (folder / "meta.json").write_text(json.dumps({"collections": {"planted": {}}, "aliases": {}}))


def test_a_planted_pickle_never_runs(built, tmp_path, encoder):
    marker = tmp_path / "pwned"
    _plant_pickle(built / "qdrant", marker)
    _edit_manifest(built, lambda manifest: manifest.update(backend="qdrant"))  # a FAISS index claiming Qdrant
    for command in ("info", "list"):
        _cli(command, str(built))
    _cli("search", str(built), "refund", "--instruction", FEEL)
    assert not marker.exists()
    def legacy(manifest: dict) -> None:  # an old qdrant-client local index
        manifest.update(version=1, qdrant_storage="local")
        del manifest["index_id"]

    _edit_manifest(built, legacy)
    with pytest.raises(InBedderError, match="legacy_qdrant=True"):
        InstructionIndex.open(built, model=encoder, read_only=True)
    result = _cli("info", str(built))
    assert result.returncode != 0 and "--legacy-qdrant" in result.stderr
    assert not marker.exists()


# ------------------------------------------------------------------ lying files


def test_a_crafted_faiss_file_is_refused_before_faiss_allocates(built, encoder):
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        target = _collection_file(built, index, FEEL)
    header = json.dumps({"doc_ids": ["a"], "faiss_ids": [0], "tombstones": []}).encode()
    claims_11gb = struct.pack("<4siqqqBi", b"IxM2", 8, 1, 0, 0, 1, 0) + struct.pack(
        "<4siqqqBi", b"IxFI", 8, 1, 0, 0, 1, 0) + struct.pack("<Q", 11 * 2**30 // 4)
    target.write_bytes(MAGIC + struct.pack("<Q", len(header)) + header + claims_11gb)
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        with pytest.raises(CollectionCorruptError, match="claims"):
            index.search("refund", FEEL)
    result = _cli("search", str(built), "refund", "--instruction", FEEL)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1
    with InstructionIndex.open(built, model=encoder) as index:  # a corrupt collection can still be dropped
        index.drop_instruction(FEEL)
        assert index.instructions() == [WANT]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing-key", "bad-json"])
def test_damaged_corpus_or_manifest_is_a_one_line_error(built, damage):
    corpus = built / "corpus.sqlite"
    if damage == "garbage":
        corpus.write_bytes(b"not a database at all" * 100)
    elif damage == "truncated":
        corpus.write_bytes(corpus.read_bytes()[:1500])
    else:
        conn = sqlite3.connect(corpus)
        value = conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0]
        manifest = json.loads(value)
        del manifest["backend"]
        conn.execute("UPDATE meta SET value=? WHERE key='manifest'",
                     (json.dumps(manifest) if damage == "missing-key" else value[:-5],))
        conn.commit()
        conn.close()
    for command in (["info", str(built)], ["search", str(built), "refund", "--instruction", FEEL]):
        result = _cli(*command)
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "corpus.sqlite" in lines[0] and "Traceback" not in result.stderr, result.stderr


def test_an_index_on_a_read_only_file_system_searches_and_refuses_writes_clearly(built, tmp_path, encoder):
    mounted = tmp_path / "ro"
    mounted.mkdir()
    if subprocess.run(["mount", "--bind", str(built), str(mounted)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here (needs root and mount rights) to make a read-only file system")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mounted)], check=True, capture_output=True)
        more = tmp_path / "more.jsonl"
        more.write_text(json.dumps({"id": "z", "text": "Another message."}) + "\n")
        before = _snapshot(built)
        with InstructionIndex.open(mounted, model=encoder, read_only=True) as index:
            assert index.search("refund", FEEL, k=2)
        assert _cli("info", str(mounted)).returncode == 0
        result = _cli("add", str(mounted), "--input", str(more))
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert _snapshot(built) == before
    finally:
        subprocess.run(["umount", str(mounted)], capture_output=True)


def test_a_full_disk_during_the_corpus_write_changes_nothing(built, encoder):
    with InstructionIndex.open(built, model=encoder) as index:
        conn = index._corpus._conn
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
        conn.execute(f"PRAGMA max_page_count = {pages}")  # SQLite now answers "database or disk is full"
        with pytest.raises(CorpusError, match="disk is full"):
            index.add([{"id": f"big{i}", "text": "x" * 20000} for i in range(20)])
        assert len(index) == len(DOCS)
        assert index.search("refund", FEEL, k=2)


# ------------------------------------------------------------------ refused before any write


def test_failing_calls_write_nothing(built, encoder):
    before = _snapshot(built)
    with InstructionIndex.open(built, model=encoder) as index:
        with pytest.raises(ValueError, match="instruction"):
            index.add_instruction("why? " * 200)  # too long for max_length
        with pytest.raises(ValueError, match="batch_size"):
            index.add_instruction("What is the topic?", batch_size=0)
        with pytest.raises(TypeError, match="single string"):
            index.delete("cab")
        with pytest.raises(TypeError, match="single str"):
            index.add("some text")
        with pytest.raises(ValueError, match="64-bit"):
            index.search("refund", FEEL, filter={"n": 10**30})
        assert index.instructions() == [FEEL, WANT]
    with pytest.raises(ValueError, match="max_length"):
        InstructionIndex.open(built, max_length=5)
    assert _snapshot(built) == before


def test_add_with_a_corrupt_collection_stores_nothing(built, encoder):
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        target = _collection_file(built, index, WANT)
    target.write_bytes(target.read_bytes()[:-7])
    with InstructionIndex.open(built, model=encoder) as index:
        with pytest.raises(CollectionCorruptError):
            index.add([{"id": "new", "text": "A brand new message."}])
        assert "new" not in index.ids()


def test_read_only_search_leaves_a_writers_temporary_file_alone(built, encoder):
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        folder = _collection_file(built, index, FEEL).parent
    streaming = folder / f".{FILENAME}.abc123.tmp"
    streaming.write_bytes(b"a writer is streaming this")
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        assert index.search("refund", FEEL, k=1)
    assert streaming.exists()


def test_misuse_gets_errors_that_name_the_problem(tmp_path, built, encoder):
    index = InstructionIndex.open(built, model=encoder)
    index.close()
    for call in (lambda: index.search("x", FEEL), lambda: index.add(DOCS), lambda: index.stats(), lambda: len(index)):
        with pytest.raises(IndexClosedError, match="closed"):
            call()
    with pytest.raises(TypeError, match="instruction must be a string"):
        encoder.encode(["text"], None)
    with pytest.raises(ValueError, match="empty path"):
        InstructionIndex.open("")
    result = _cli("search", str(built), "x", "--instruction", FEEL, "--max-length", "0")
    assert result.returncode == 2 and "max_length" in result.stderr


def test_collection_files_follow_the_umask(built, encoder):
    with InstructionIndex.open(built, model=encoder, read_only=True) as index:
        mode = _collection_file(built, index, FEEL).stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask


def test_a_failed_first_build_leaves_nothing_behind(tmp_path, encoder):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once the probe closes
    path = tmp_path / "idx"
    with pytest.raises(InBedderError):
        InstructionIndex.open(path, model=encoder, backend="qdrant", qdrant_url=f"http://127.0.0.1:{port}")
    assert not path.exists()
    with InstructionIndex.open(path, model=encoder) as index:  # the folder is free for a working build
        index.add(DOCS)
        index.add_instruction(FEEL)


def test_reopening_a_server_index_without_its_url_is_an_error(tmp_path, encoder):
    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder) as index:
        index.add(DOCS)
    _edit_manifest(path, lambda manifest: manifest.update(backend="qdrant", qdrant_url="http://qdrant.example:6333"))
    with pytest.raises(ManifestError, match="qdrant.example"):
        InstructionIndex.open(path, model=encoder, read_only=True)
    with pytest.raises(ManifestError, match="qdrant.example.*other.example"):
        InstructionIndex.open(path, model=encoder, qdrant_url="http://other.example:6333")


# ------------------------------------------------------------------ fuzz

FUZZ = """
import json, os, random, sqlite3, sys
sys.path.insert(0, {tests!r})
from inbedder_index import InBedder, InstructionIndex
from inbedder_index.errors import InBedderError
from tiny_models import make_model
model, tokenizer = make_model("llama")
encoder = InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)
path, target, mode, seed, rounds = {path!r}, {target!r}, {mode!r}, {seed}, {rounds}
rng = random.Random(seed)
original = open(target, "rb").read()

def manifest_mutation():
    conn = sqlite3.connect(os.path.join(path, "corpus.sqlite"))
    data = json.loads(conn.execute("SELECT value FROM meta WHERE key='manifest'").fetchone()[0])
    node, key = data, None
    while isinstance(node, dict) and node and rng.random() < 0.7:
        key = rng.choice(list(node))
        parent, node = node, node[key]
    if key is not None:
        parent[key] = rng.choice([None, -1, 10**30, "x" * 300, "../..", [], {{}}, True, 1.5])
    conn.execute("UPDATE meta SET value=? WHERE key='manifest'", (json.dumps(data),))
    conn.commit()
    conn.close()

for round in range(rounds):
    if mode == "manifest":
        manifest_mutation()
    else:
        data = bytearray(original)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] = rng.randrange(256)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        open(target, "wb").write(bytes(data))
    try:
        with InstructionIndex.open(path, model=encoder, read_only=True) as index:
            index.stats()
            for instruction in index.instructions():
                index.search("refund please", instruction, k=3, filter={{"lang": "en"}})
        print("ok", round)
    except (InBedderError, ValueError, TypeError, OSError) as error:
        print("refused", round, type(error).__name__, str(error)[:80])
    open(target, "wb").write(original)
print("done")
"""


@pytest.mark.parametrize("target", ["manifest", "corpus", "flat", "hnsw"])
def test_fuzzed_index_files_give_a_clean_error_or_a_correct_result(tmp_path, encoder, target):
    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder, hnsw=target == "hnsw") as index:
        index.add(DOCS)
        index.add_instruction(FEEL)
        collection = _collection_file(path, index, FEEL)
    outside = _snapshot(tmp_path)
    file = str(path / "corpus.sqlite") if target in ("manifest", "corpus") else str(collection)
    script = FUZZ.format(tests=str(Path(__file__).parent), path=str(path), target=file,
                         mode="manifest" if target == "manifest" else "bytes", seed=7, rounds=40)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and result.stdout.rstrip().endswith("done"), result.stderr[-3000:]
    outcomes = [line.split()[0] for line in result.stdout.splitlines() if line.startswith(("ok ", "refused "))]
    assert len(outcomes) == 40, result.stdout
    after = _snapshot(tmp_path)  # nothing written outside the index folder
    assert {k: v for k, v in after.items() if not k.startswith("idx")} == {
        k: v for k, v in outside.items() if not k.startswith("idx")}
