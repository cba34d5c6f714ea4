"""InstructionIndex on a real FAISS index and a real qdrant-client local collection."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from inbedder_index import InBedder, InstructionIndex
from inbedder_index.errors import CorpusError, IndexLockedError, ModelMismatchError, UnknownInstructionError
from tiny_models import make_model

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
DOCS = [
    {"id": "a", "text": "I am furious, the parcel never arrived and I want a refund.", "metadata": {"lang": "en", "n": 1}},
    {"id": "b", "text": "Thank you so much, the phone works perfectly now.", "metadata": {"lang": "en", "n": 2}},
    {"id": "c", "text": "Heavy rain is expected in Paris tomorrow afternoon.", "metadata": {"lang": "fr", "n": 3}},
    {"id": "d", "text": "The football match was moved to Sunday because of the storm.", "metadata": {"lang": "en", "n": 4}},
    {"id": "e", "text": "Stock markets rallied after the bank kept rates unchanged.", "metadata": {"lang": "de", "n": 5}},
]
BACKENDS = [("faiss", False), ("faiss", True), ("qdrant", False)]


@pytest.fixture(scope="module")
def encoder() -> InBedder:
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)


@pytest.fixture(params=BACKENDS, ids=["faiss", "faiss-hnsw", "qdrant-local"])
def opened(request, tmp_path, encoder):
    backend, hnsw = request.param
    index = InstructionIndex.open(tmp_path / "idx", model=encoder, backend=backend, hnsw=hnsw)
    yield index, (backend, hnsw), tmp_path / "idx"
    index.close()


def assert_in_step(index: InstructionIndex) -> None:
    """Every collection holds exactly the corpus, with vectors of the current texts."""
    corpus_ids = {d.id for d in index.get(list(index._corpus.ids()))}
    for instruction in index.instructions():
        backend = index._backend(instruction)
        assert backend.ids() == corpus_ids, instruction
        docs = index.get(sorted(corpus_ids))
        if docs:
            expected = index.encoder.encode([d.text for d in docs], instruction)
            stored = backend.get_vectors([d.id for d in docs])
            got = np.stack([stored[d.id] for d in docs])
            np.testing.assert_allclose(got, expected, atol=1e-4)


def test_round_trip_and_hits(opened):
    index, _, _ = opened
    assert index.add(DOCS) == [d["id"] for d in DOCS]
    assert index.add_instruction(FEEL) == len(DOCS)
    hits = index.search(DOCS[2]["text"], FEEL, k=3)
    assert hits[0].id == "c" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].text == DOCS[2]["text"] and hits[0].metadata == {"lang": "fr", "n": 3}
    assert isinstance(hits[0].answer, str)  # the model's answer was stored with the vector
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    by_vector = index.search_by_vector(index.encoder.encode(DOCS[2]["text"], FEEL), FEEL, k=3)
    assert [h.id for h in by_vector] == [h.id for h in hits]
    assert len(index.search("anything", FEEL, k=50)) == len(DOCS)
    assert_in_step(index)


def test_filters(opened):
    index, _, _ = opened
    index.add(DOCS)
    index.add_instruction(FEEL)
    assert {h.id for h in index.search("x", FEEL, k=10, filter={"lang": "en"})} == {"a", "b", "d"}
    assert {h.id for h in index.search("x", FEEL, k=10, filter={"lang": ["fr", "de"]})} == {"c", "e"}
    assert {h.id for h in index.search("x", FEEL, k=10, filter={"lang": "en", "n": 2})} == {"b"}
    assert index.search("x", FEEL, k=10, filter={"lang": "jp"}) == []
    with pytest.raises(ValueError, match="filter"):
        index.search("x", FEEL, filter={"bad field!": 1})


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_same_query_ranks_differently_under_two_instructions(tmp_path, default_encoder, backend):
    """A real model: the same query, two questions asked of the corpus, two different rankings."""
    query = "I want my money back, I am angry"
    with InstructionIndex.open(tmp_path / "idx", model=default_encoder, backend=backend) as index:
        index.add(DOCS)
        index.add_instructions([FEEL, WANT])
        rankings = {i: [h.id for h in index.search(query, i, k=5)] for i in (FEEL, WANT)}
        assert rankings[FEEL] != rankings[WANT]
        for instruction in (FEEL, WANT):  # each ranking is the exact nearest-neighbour order under its instruction
            wanted = default_encoder.encode(query, instruction)
            vectors = default_encoder.encode([d["text"] for d in DOCS], instruction)
            assert rankings[instruction] == [DOCS[i]["id"] for i in np.argsort(-(vectors @ wanted))]


def test_upsert_and_delete_keep_collections_in_step(opened):
    index, (backend, _), _ = opened
    index.add(DOCS[:3])
    index.add_instructions([FEEL, WANT])
    calls = []
    original = index.encoder.encode

    def counting(texts, instruction, **kwargs):
        calls.append(list(texts))
        return original(texts, instruction, **kwargs)

    index.encoder.encode = counting  # type: ignore[method-assign]
    try:
        changed = index.upsert([
            {"id": "a", "text": DOCS[0]["text"], "metadata": {"lang": "xx"}},  # metadata only
            {"id": "b", "text": "A completely new text for b."},  # changed text
            DOCS[3],  # new
        ])
        assert sorted(changed) == ["b", "d"]
        assert sorted(t for call in calls for t in call) == sorted(["A completely new text for b.", DOCS[3]["text"]])
    finally:
        del index.encoder.encode
    assert_in_step(index)
    assert {h.id for h in index.search("x", FEEL, filter={"lang": "xx"})} == {"a"}  # payloads refreshed
    assert index.delete(["b", "zzz"]) == ["b"]
    assert_in_step(index)
    assert all(h.id != "b" for h in index.search("A completely new text for b.", WANT))
    assert index.stats()["collections"][0]["count"] == 3


def test_reopen_after_restart(opened, encoder):
    index, (backend, hnsw), path = opened
    index.add(DOCS)
    index.add_instruction(FEEL)
    before = [(h.id, round(h.score, 4)) for h in index.search("rain in Paris", FEEL)]
    index.close()
    with InstructionIndex.open(path, model=encoder) as reopened:
        assert reopened.backend == backend and reopened.instructions() == [FEEL]
        assert [(h.id, round(h.score, 4)) for h in reopened.search("rain in Paris", FEEL)] == before
        assert len(reopened) == len(DOCS)
        stats = reopened.stats()
        assert stats["collections"][0]["count"] == len(DOCS)
        assert stats["model"]["fingerprint"] == encoder.fingerprint


def test_model_mismatch_names_both(opened):
    index, _, path = opened
    index.add(DOCS)
    index.add_instruction(FEEL)
    index.close()
    other_model, other_tokenizer = make_model("llama", seed=3)
    other = InBedder.from_model(other_model, other_tokenizer, model_id="other-tiny", max_length=96)
    with pytest.raises(ModelMismatchError, match="tiny-llama.*other-tiny"):
        InstructionIndex.open(path, model=other)


def test_writer_lock(opened, encoder):
    index, (backend, _), path = opened
    with pytest.raises(IndexLockedError, match="open for writing"):
        InstructionIndex.open(path, model=encoder)
    index.add(DOCS)  # the first writer is unaffected
    assert len(index) == len(DOCS)


def test_bad_input_leaves_data_intact(opened):
    index, _, _ = opened
    index.add(DOCS)
    index.add_instruction(FEEL)
    before = [h.id for h in index.search("storm", FEEL)]
    with pytest.raises(CorpusError, match="'a'"):
        index.add([{"id": "new", "text": "fine"}, {"id": "a", "text": "exists"}])
    with pytest.raises(ValueError, match="duplicate"):
        index.upsert([{"id": "x", "text": "one"}, {"id": "x", "text": "two"}])
    with pytest.raises(TypeError, match="1"):
        index.upsert([{"id": "y", "text": "ok"}, {"id": "z", "text": 42}])
    with pytest.raises(UnknownInstructionError, match="How does the customer feel"):
        index.search("storm", "Unknown question?")
    with pytest.raises(ValueError, match="k must"):
        index.search("storm", FEEL, k=0)
    assert len(index) == len(DOCS) and "new" not in {d.id for d in index.get(["new"])}
    assert [h.id for h in index.search("storm", FEEL)] == before
    assert_in_step(index)


def test_drop_instruction_and_stats(opened):
    index, _, _ = opened
    index.add(DOCS)
    index.add_instructions([FEEL, WANT])
    assert index.instructions() == [FEEL, WANT]
    names = [c["name"] for c in index.stats()["collections"]]
    assert len(set(names)) == 2
    index.drop_instruction(FEEL)
    assert index.instructions() == [WANT]
    with pytest.raises(UnknownInstructionError):
        index.search("x", FEEL)
    assert len(index.search("x", WANT)) == len(DOCS)
    index.add_instruction(FEEL)  # re-adding rebuilds it
    assert index.stats()["collections"][-1]["count"] == len(DOCS)


CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    import inbedder_index.sync as sync_module
    from inbedder_index import InBedder, InstructionIndex
    from tiny_models import make_model

    sync_module.CHECKPOINT_SECONDS = 0.0  # make every batch durable, so the kill lands between checkpoints
    model, tokenizer = make_model("llama")
    encoder = InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)
    original = encoder.encode

    def slow(*args, **kwargs):
        print("batch", flush=True)
        time.sleep(0.3)
        return original(*args, **kwargs)

    encoder.encode = slow
    index = InstructionIndex.open({path!r}, model=encoder, backend={backend!r})
    index.add_instruction({instruction!r}, batch_size=10)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("backend", ["faiss", "qdrant"])
def test_killed_build_resumes_without_loss_or_duplicates(tmp_path, encoder, backend):
    path = tmp_path / "idx"
    docs = [{"id": f"d{i}", "text": f"Document number {i} about the weather and the customer."} for i in range(80)]
    with InstructionIndex.open(path, model=encoder, backend=backend) as index:
        index.add(docs)
    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), path=str(path), backend=backend, instruction=FEEL)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    batches = 0
    for line in process.stdout:  # type: ignore[union-attr]
        batches += line.startswith("batch")
        if batches == 4:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    time.sleep(0.1)
    with InstructionIndex.open(path, model=encoder) as index:  # opens after the crash; the lock was freed
        partial = index._backend(FEEL).count()
        assert 0 < partial < len(docs)
        assert index.add_instruction(FEEL) == len(docs) - partial  # only the missing ones are encoded
        assert index._backend(FEEL).count() == len(docs)
        assert_in_step(index)
        assert index.add_instruction(FEEL) == 0


def test_open_rejects_bad_options(tmp_path, encoder):
    with pytest.raises(ValueError, match="unknown backend"):
        InstructionIndex.open(tmp_path / "x", model=encoder, backend="milvus")
    with InstructionIndex.open(tmp_path / "y", model=encoder, backend="faiss"):
        pass
    with pytest.raises(ValueError, match="backend 'faiss'"):
        InstructionIndex.open(tmp_path / "y", model=encoder, backend="qdrant")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        InstructionIndex.open(tmp_path / "file", model=encoder)
    with pytest.raises(TypeError, match="open"):
        InstructionIndex(tmp_path / "z")
