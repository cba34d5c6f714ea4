"""The distributed build on a real local Ray cluster (2 CPUs), with a tiny random Llama saved to a folder.

Each actor loads the model from that folder, as workers on a real cluster load a model by path:
the vectors must equal those of the single-process build. A driver killed mid-build
(SIGKILL of a subprocess) and a worker killed mid-block (``os._exit`` inside the actor) must
both end with every document stored once, with the right vector.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the distributed build needs the 'ray' extra")

from inbedder_index import InBedder, InstructionIndex  # noqa: E402
from inbedder_index import distributed  # noqa: E402
from inbedder_index.cli import main  # noqa: E402
from inbedder_index.errors import ModelMismatchError  # noqa: E402
from qdrant_server import SKIP_REASON, server_api_key, server_url  # noqa: E402
from tiny_models import make_model  # noqa: E402

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
SUBJECTS = ["parcel", "phone", "refund", "invoice", "password", "delivery", "jacket", "drill"]
DOCS = [
    {"id": f"d{i:02d}", "text": f"Message {i}: the {SUBJECTS[i % 8]} " + "is late and I am upset. " * (i % 4),
     "metadata": {"shop": ["north", "south"][i % 2], "n": i}}
    for i in range(36)
]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster for the module; the test module's helpers travel to workers by value."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray.get_runtime_context().gcs_address
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> str:
    model, tokenizer = make_model("llama")
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def reference(model_folder, tmp_path_factory):
    """The single-process build: {instruction: ({id: vector}, {id: answer})}."""
    path = tmp_path_factory.mktemp("reference") / "idx"
    with InstructionIndex.open(path, model=InBedder(model_folder, max_length=96)) as index:
        index.add(DOCS)
        index.add_instructions([FEEL, WANT])
        return snapshot(index)


def snapshot(index: InstructionIndex) -> dict[str, tuple[dict[str, np.ndarray], dict[str, str]]]:
    ids = index.ids()
    return {i: (index.get_vectors(ids, i), index.answers(i, ids)) for i in index.instructions()}


def assert_equals_reference(index: InstructionIndex, reference) -> None:
    """Same ids and counts as the single-process build, each vector at cosine >= 0.99999, nothing pending."""
    ids = sorted(d["id"] for d in DOCS)
    assert sorted(index.ids()) == ids
    assert set(index.instructions()) == set(reference)
    for entry in index.stats()["collections"]:
        assert entry["count"] == len(DOCS) and entry["pending"] == 0, entry
    for instruction, (vectors, answers) in reference.items():
        got = index.get_vectors(ids, instruction)
        assert sorted(got) == ids
        cosines = [float(np.dot(got[i], vectors[i]) / np.linalg.norm(got[i]) / np.linalg.norm(vectors[i])) for i in ids]
        assert min(cosines) >= 0.99999, (instruction, min(cosines))
        assert index.answers(instruction, ids) == answers


def new_index(path: Path, model_folder: str, **options) -> InstructionIndex:
    index = InstructionIndex.open(path, model=InBedder(model_folder, max_length=96), **options)
    index.store_documents(DOCS)
    return index


@dataclass(frozen=True)
class CrashingModel:
    """Loads the tiny model; the first block any actor encodes kills that actor's process, once."""

    folder: str
    marker: str

    def __call__(self) -> InBedder:
        encoder = InBedder(self.folder, max_length=96)
        encode = encoder.encode

        def encode_or_die(*args, **kwargs):
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return encode(*args, **kwargs)
            os._exit(1)  # a worker dying mid-block, as on an out-of-memory kill

        encoder.encode = encode_or_die
        return encoder


def test_two_actors_equal_the_single_process_build(cluster, model_folder, reference, tmp_path):
    with new_index(tmp_path / "idx", model_folder) as index:
        assert index.stats()["collections"] == []
        report = distributed.build(index, [FEEL, WANT], num_actors=2, batch_size=5)
        assert (report.encoded, report.blocks, report.actors) == (len(DOCS), 8, 2)
        assert report.worker_seconds > 0 and report.worker_peak_rss_bytes > 0
        assert_equals_reference(index, reference)
        assert distributed.build(index, [FEEL]).encoded == 0  # everything is recorded: nothing to redo

        changed = dict(DOCS[3], text="A brand new text about a broken drill.")
        index.store_documents([changed])  # stale under both instructions, encoded by the next build only
        assert {c["pending"] for c in index.stats()["collections"]} == {1}
        assert distributed.build(index, [WANT], num_actors=1).encoded == 1
        expected = index.encoder.encode([changed["text"]], [FEEL, WANT])
        for instruction in (FEEL, WANT):
            stored = index.get_vectors([changed["id"]], instruction)[changed["id"]]
            assert float(np.dot(stored, expected[instruction][0])) >= 0.99999


def test_a_killed_worker_is_restarted_and_its_block_retried(cluster, model_folder, reference, tmp_path):
    marker = tmp_path / "crashed"
    with new_index(tmp_path / "idx", model_folder) as index:
        index.register_instructions([FEEL, WANT])
        report = distributed.build(index, [FEEL, WANT], model=CrashingModel(model_folder, str(marker)),
                                   num_actors=2, batch_size=6)
        assert marker.exists()  # a worker did die mid-block
        assert report.encoded == len(DOCS)
        assert_equals_reference(index, reference)


DRIVER_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import ray
    from inbedder_index import InBedder, distributed
    from inbedder_index.sync import Sync

    checkpoint = Sync.checkpoint

    def announced(self, pending):
        checkpoint(self, pending)
        print("checkpoint", flush=True)

    Sync.checkpoint = announced

    def slow_model():
        encoder = InBedder({folder!r}, max_length=96)
        encode = encoder.encode

        def slow(*args, **kwargs):
            time.sleep(0.4)
            return encode(*args, **kwargs)

        encoder.encode = slow
        return encoder

    ray.init(address={address!r}, logging_level="ERROR")
    distributed.build({path!r}, {instructions!r}, model=slow_model, num_actors=1, batch_size=4, checkpoint_docs=4)
    print("finished", flush=True)
    """
)


def test_a_killed_driver_resumes_with_nothing_lost_or_duplicated(cluster, model_folder, reference, tmp_path):
    path = tmp_path / "idx"
    with new_index(path, model_folder) as index:
        index.register_instructions([FEEL, WANT])
    script = DRIVER_SCRIPT.format(folder=model_folder, address=cluster, path=str(path), instructions=[FEEL, WANT])
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    checkpoints = 0
    for line in process.stdout:  # type: ignore[union-attr]
        checkpoints += line.startswith("checkpoint")
        if checkpoints == 3:  # three of nine blocks recorded, more in flight
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    with InstructionIndex.open(path, read_only=True) as index:
        pending = {c["pending"] for c in index.stats()["collections"]}
    assert len(pending) == 1 and 0 < next(iter(pending)) < len(DOCS)  # both instructions recorded together
    with InstructionIndex.open(path, model=InBedder(model_folder, max_length=96)) as index:  # the lock was freed
        report = distributed.build(index, [FEEL, WANT], num_actors=2, batch_size=4)
        assert report.encoded == next(iter(pending))  # exactly the unrecorded documents
        assert_equals_reference(index, reference)


def test_cli_build_with_ray(cluster, model_folder, reference, tmp_path, capsys):
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": d["id"], "text": d["text"], **d["metadata"]}) + "\n" for d in DOCS))
    path = tmp_path / "idx"
    code = main(["build", str(path), "--input", str(source), "--instruction", FEEL, "--instruction", WANT,
                 "--model", model_folder, "--max-length", "96", "--ray", "--ray-actors", "2", "--json"])
    assert code == 0, capsys.readouterr().err
    stats = json.loads(capsys.readouterr().out)
    assert [c["count"] for c in stats["collections"]] == [len(DOCS), len(DOCS)]
    with InstructionIndex.open(path, read_only=True) as index:
        assert_equals_reference(index, reference)


@pytest.mark.skipif(server_url() is None, reason=SKIP_REASON)
def test_workers_upsert_straight_to_a_qdrant_server(cluster, model_folder, reference, tmp_path):
    with new_index(tmp_path / "idx", model_folder, backend="qdrant", qdrant_url=server_url(),
                   qdrant_api_key=server_api_key()) as index:
        try:
            report = distributed.build(index, [FEEL, WANT], num_actors=2, batch_size=5,
                                       qdrant_api_key=server_api_key())
            assert report.encoded == len(DOCS)
            assert_equals_reference(index, reference)
        finally:
            for instruction in index.instructions():
                index.drop_instruction(instruction)


def test_workers_refuse_a_model_that_is_not_the_index_s(cluster, model_folder, tmp_path):
    other, tokenizer = make_model("llama", seed=1)
    folder = tmp_path / "other"
    other.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    with new_index(tmp_path / "idx", model_folder) as index:
        with pytest.raises(ModelMismatchError, match=r"on a Ray worker: .*fingerprint"):
            distributed.build(index, [FEEL], model=str(folder), num_actors=1)
        assert index.stats()["collections"][0]["pending"] == len(DOCS)  # nothing recorded


def test_missing_ray_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r"inbedder-index\[ray\]"):
        distributed.build(tmp_path / "idx", [FEEL])
    assert not (tmp_path / "idx").exists()  # refused before the index was created
