"""A process SIGKILLed at each write point leaves an index that says what it holds and that the
same command, run again, completes: nothing lost, nothing duplicated, every vector current.

The child process is the real library with one function wrapped to kill the process at that
point (no hooks in the library itself).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from inbedder_index import InBedder, InstructionIndex
from test_index import FEEL, WANT, assert_in_step
from tiny_models import make_model

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import inbedder_index.sync as sync_module
    import inbedder_index.storage as storage_module
    import inbedder_index.backends.faiss as faiss_module
    from inbedder_index import InBedder, InstructionIndex
    from inbedder_index.corpus import Corpus
    from tiny_models import make_model

    sync_module.CHECKPOINT_SECONDS = 0.0  # every batch is a checkpoint: kills land between them
    point, action, docs = {point!r}, {action!r}, {docs!r}
    calls = {{"n": 0}}

    def die():
        os.kill(os.getpid(), signal.SIGKILL)

    def at(nth, original, after=False, half=False):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == nth and half:  # write part of the batch, then die
                ids, vectors = args[0], args[1]
                original(ids[: len(ids) // 2], vectors[: len(ids) // 2], *(a[: len(ids) // 2] for a in args[2:3]))
                die()
            if calls["n"] == nth and not after:
                die()
            result = original(*args, **kwargs)
            if calls["n"] == nth:
                die()
            return result
        return wrapped

    if point == "encode":
        InBedder.encode = at(2 if action == "build" else 1, InBedder.encode)
    elif point == "faiss-write":
        faiss_module.os.replace = at(2, faiss_module.os.replace)  # temp file written, not yet renamed
    elif point == "before-mark":
        Corpus.mark_embedded = at(1, Corpus.mark_embedded)
    elif point == "mid-upsert":
        opened = storage_module.open_backend
        def open_backend(*args, **kwargs):
            backend = opened(*args, **kwargs)
            backend.upsert = at(2 if action == "build" else 1, backend.upsert, half=True)
            return backend
        storage_module.open_backend = open_backend
    elif point == "drop-before-delete":
        storage_module.Storage.drop = at(1, storage_module.Storage.drop)
    elif point == "drop-after-delete":
        storage_module.Storage.drop = at(1, storage_module.Storage.drop, after=True)

    model, tokenizer = make_model("llama")
    encoder = InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)
    with InstructionIndex.open({path!r}, model=encoder) as index:
        if action == "build":
            index.add_instructions([{feel!r}, {want!r}], batch_size=10)
        elif action == "add":
            index.add(docs)
        elif action == "upsert":
            index.upsert(docs)
        elif action == "drop":
            index.drop_instruction({feel!r})
    print("finished")
    """
)

BASE = [{"id": f"d{i}", "text": f"Message {i}: the parcel is late and I am upset.", "metadata": {"n": i}}
        for i in range(40)]
NEW = [{"id": f"n{i}", "text": f"New message {i}: thanks, the phone works.", "metadata": {"n": i}} for i in range(12)]
CHANGED = [{**doc, "text": doc["text"] + " Update: it came."} for doc in BASE[:10]] + NEW[:4]
CASES = [
    ("encode", "build"), ("faiss-write", "build"), ("before-mark", "build"), ("mid-upsert", "build"),
    ("encode", "add"), ("before-mark", "add"), ("mid-upsert", "add"),
    ("encode", "upsert"), ("mid-upsert", "upsert"),
    ("drop-before-delete", "drop"), ("drop-after-delete", "drop"),
]


@pytest.fixture(scope="module")
def encoder() -> InBedder:
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)


def _run_child(path: Path, point: str, action: str, docs: list[dict]) -> subprocess.CompletedProcess:
    script = CHILD.format(tests=str(Path(__file__).parent), path=str(path), point=point, action=action,
                          docs=docs, feel=FEEL, want=WANT)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)


def _assert_honest(index: InstructionIndex) -> None:
    """``stats()`` reports what each collection really holds, and flags unfinished work."""
    stats = index.stats()
    for entry in stats["collections"]:
        backend = index._backend(entry["instruction"])
        assert entry["count"] == backend.count()
        complete = entry["pending"] == 0 and backend.ids() == set(index.ids())
        assert (entry["problem"] is None) == complete, entry


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
@pytest.mark.parametrize(("point", "action"), CASES, ids=[f"{a}-{p}" for p, a in CASES])
def test_kill_at_each_write_point_then_rerun_completes(tmp_path, encoder, backend, point, action):
    if point == "faiss-write" and backend != "faiss":
        pytest.skip("a FAISS file write is a FAISS-only write point")
    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder, backend=backend) as index:
        index.add(BASE)
        if action != "build":
            index.add_instructions([FEEL, WANT])
    docs = {"add": NEW, "upsert": CHANGED}.get(action, [])
    killed = _run_child(path, point, action, docs)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    with InstructionIndex.open(path, model=encoder, read_only=True) as index:
        _assert_honest(index)
    rerun = _run_child(path, "none", action, docs)
    if action == "drop":  # the manifest forgot it first, so the rerun says it is gone
        assert "no collection for instruction" in rerun.stderr
    else:
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    with InstructionIndex.open(path, model=encoder) as index:
        expected = {FEEL, WANT} - ({FEEL} if action == "drop" else set())
        assert set(index.instructions()) == expected
        assert set(index.ids()) == {d["id"] for d in BASE + docs}
        for doc in index.get([d["id"] for d in docs]):
            assert doc.text == next(d["text"] for d in docs if d["id"] == doc.id)
        _assert_honest(index)
        assert all(c["problem"] is None for c in index.stats()["collections"])
        assert_in_step(index)
        if backend == "faiss":  # no temporary file, and no folder of a dropped collection, is left
            assert not list((path / "faiss").glob("*/.*.tmp"))
            assert len(list((path / "faiss").iterdir())) == len(expected)


def test_interrupted_add_is_reported_by_info_and_finished_by_any_write(tmp_path, encoder):
    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder) as index:
        index.add(BASE)
        index.add_instruction(FEEL)
    assert _run_child(path, "encode", "add", NEW).returncode == -signal.SIGKILL
    out = subprocess.run([sys.executable, "-m", "inbedder_index.cli", "info", str(path), "--json"],
                         capture_output=True, text=True, timeout=120)
    (entry,) = json.loads(out.stdout)["collections"]
    assert entry["pending"] == len(NEW) and "interrupted" in entry["problem"]
    with InstructionIndex.open(path, model=encoder) as index:
        index.delete(["d0"])  # an unrelated write finishes the interrupted one first
        assert index.stats()["collections"][0]["pending"] == 0
        assert_in_step(index)


def test_a_full_disk_during_the_faiss_write_is_reported_and_finished_later(tmp_path, encoder, monkeypatch):
    import errno

    import inbedder_index.backends.faiss as faiss_module

    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder) as index:
        index.add(BASE)
        index.add_instruction(FEEL)
        real_replace = faiss_module.os.replace

        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(faiss_module.os, "replace", full)
        with pytest.raises(OSError, match="No space"):
            index.add(NEW)
        monkeypatch.setattr(faiss_module.os, "replace", real_replace)
        (entry,) = index.stats()["collections"]
        assert entry["pending"] == len(NEW) and entry["problem"]
        assert not list((path / "faiss").glob("*/.*.tmp"))  # the failed write removed its temporary file
    with InstructionIndex.open(path, model=encoder) as index:
        index.add(NEW)  # the same command again completes it
        assert index.stats()["collections"][0]["problem"] is None
        assert_in_step(index)


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_a_missing_collection_is_an_error_never_an_empty_result_and_build_restores_it(tmp_path, encoder, backend):
    import shutil

    from inbedder_index.storage import MissingCollectionError

    path = tmp_path / "idx"
    with InstructionIndex.open(path, model=encoder, backend=backend) as index:
        index.add(BASE)
        index.add_instruction(FEEL)
        name = index._entry(FEEL)["name"]
    shutil.rmtree(path / ("faiss" if backend == "faiss" else "qdrant-edge") / name)
    with InstructionIndex.open(path, model=encoder, read_only=True) as index:
        with pytest.raises(MissingCollectionError, match="inbedder-index build"):
            index.search("late parcel", FEEL)
        (entry,) = index.stats()["collections"]
        assert entry["count"] == 0 and "missing" in entry["problem"]
    assert not (path / "faiss" / name).exists()  # the read created nothing
    with InstructionIndex.open(path, model=encoder) as index:
        assert index.add_instruction(FEEL) == len(BASE)  # build re-encodes it all
        assert_in_step(index)


def test_indexes_whose_folders_share_a_name_never_share_a_collection(tmp_path, encoder):
    names = []
    for parent in ("one", "two"):
        with InstructionIndex.open(tmp_path / parent / "reviews", model=encoder) as index:
            index.add(BASE[:3])
            index.add_instruction(FEEL)
            names.append(index._entry(FEEL)["name"])
            assert index.stats()["index_id"] in names[-1]
    assert names[0] != names[1] and names[0].startswith("ib_reviews_")


def test_embedded_qdrant_gets_payload_indexes_for_the_metadata_documents_carry(tmp_path, encoder):
    with InstructionIndex.open(tmp_path / "idx", model=encoder, backend="qdrant") as index:
        index.add([{**doc, "metadata": {"n": doc["metadata"]["n"], "shop": "north", "vip": True}} for doc in BASE])
        index.add_instruction(FEEL)
        assert index._backend(FEEL).payload_indexes() == {"n": "integer", "shop": "keyword", "vip": "bool"}
        assert {h.id for h in index.search("late", FEEL, k=50, filter={"vip": True, "n": [1, 2]})} == {"d1", "d2"}
