"""Issue 21, tried as a hostile user would: writes that fail but store, metadata that breaks later
searches, a service that drops connections or works without bound, and a `migrate` the docs
promised. Real components throughout: FAISS and embedded Qdrant (qdrant-edge) indexes, a tiny
random model, uvicorn on 127.0.0.1; the fuzz tests (hypothesis) send request bodies to the real
server and metadata shapes to ``add()``, and check that nothing is a 500 and nothing stored is
lost or changed.
"""

from __future__ import annotations

import io
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("faiss")
pytest.importorskip("qdrant_edge")
hypothesis = pytest.importorskip("hypothesis")

from corpora import FEEL, SMALL_CORPUS, WANT, tiny_encoder  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from serving import running, tiny_server_encoder  # noqa: E402

from inbedder_index import InstructionIndex  # noqa: E402
from inbedder_index.cli import main  # noqa: E402
from inbedder_index.errors import IncompleteIndexError, IndexLockedError, LimitExceededError  # noqa: E402
from inbedder_index.limits import MAX_K, MAX_METADATA_BYTES, MAX_METADATA_DEPTH  # noqa: E402
from inbedder_index.migration import migrate_index  # noqa: E402
from inbedder_index.serve import Settings  # noqa: E402
from tiny_models import save_tiny  # noqa: E402

DOCS = [{"id": doc_id, "text": text, "metadata": metadata} for doc_id, text, metadata in SMALL_CORPUS]
ODD_KEYS = {"first name": "Jo", "a.b": 1, "shop": "west"}  # keys no filter can name, and one it can
BACKENDS = ["faiss", "qdrant"]
FUZZ = settings(deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def build(path: Path, backend: str, docs: list[dict] = DOCS, instructions: tuple[str, ...] = (FEEL,)) -> Path:
    with InstructionIndex.open(path, model=tiny_encoder(), backend=backend) as index:
        index.add(docs)
        index.add_instructions(list(instructions))
    return path


def nested(depth: int) -> dict[str, Any]:
    """Metadata ``depth`` levels deep (the metadata object itself is level 1)."""
    metadata: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        metadata = {"x": metadata}
    return metadata


def snapshot(index: InstructionIndex) -> tuple[list[Any], list[Any]]:
    """Every stored document, and each collection's count and pending work."""
    docs = [(d.id, d.text, d.metadata) for d in index.get(index.ids())]
    return docs, [(c["instruction"], c["count"], c["pending"], c["problem"]) for c in index.stats()["collections"]]


def assert_complete(index: InstructionIndex) -> None:
    """Every document has an up-to-date vector under every instruction, and searches return them all."""
    documents = len(index)
    for collection in index.stats()["collections"]:
        assert (collection["count"], collection["pending"], collection["problem"]) == (documents, 0, None)
        hits = index.search("anything", collection["instruction"], k=MAX_K)
        assert sorted(h.id for h in hits) == sorted(index.ids())


# ----------------------------------------------------------------- writes that fail but store


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_keys_that_filters_cannot_name_never_fail_or_wedge_a_write(tmp_path, backend) -> None:
    path = build(tmp_path / "odd", backend, DOCS + [{"id": "odd", "text": "Who is Jo?", "metadata": ODD_KEYS}])
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        assert index.get(["odd"])[0].metadata == ODD_KEYS
        assert index.add([{"id": "later", "text": "Another message.", "metadata": {"shop": "west", "x y": 2}}]) \
            == ["later"]
        assert index.add([{"id": "plain", "text": "A plain one.", "metadata": {"shop": "south"}}]) == ["plain"]
        assert_complete(index)
        hits = index.search("Jo", FEEL, k=10, filter={"shop": "west"})
        assert sorted(h.id for h in hits) == ["later", "odd"]
        assert {h.id: h.metadata for h in hits}["odd"] == ODD_KEYS
        if backend == "qdrant":  # the nameable fields are indexed; the others are stored, not indexed
            assert index._backend(FEEL).payload_indexes() == {"shop": "keyword", "n": "integer"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """The tiny model saved as a folder, so the CLI can load it by name."""
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny-llama")


def test_the_cli_builds_and_adds_documents_with_such_keys(tmp_path, model_dir) -> None:
    rows = tmp_path / "docs.jsonl"
    rows.write_text("\n".join(json.dumps({"id": d["id"], "text": d["text"], **d["metadata"], "first name": "Jo",
                                          "a.b": 1}) for d in DOCS))
    more = tmp_path / "more.jsonl"
    more.write_text(json.dumps({"id": "e", "text": "One more.", "first name": "Al", "shop": "east"}))
    path = str(tmp_path / "cli")
    assert main(["build", path, "--input", str(rows), "--instruction", FEEL, "--backend", "qdrant",
                 "--model", str(model_dir)]) == 0
    assert main(["add", path, "--input", str(more)]) == 0
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        assert_complete(index)
        assert index.get(["e"])[0].metadata == {"first name": "Al", "shop": "east"}
        assert sorted(h.id for h in index.search("x", FEEL, k=5, filter={"shop": "east"})) == ["d", "e"]


def test_the_service_adds_documents_with_such_keys(tmp_path) -> None:
    encoder = tiny_server_encoder()
    path = build(tmp_path / "served", "qdrant")
    with running(encoder, {"w": InstructionIndex.open(path, model=encoder)}) as (url, _), \
            httpx.Client(base_url=url, timeout=30) as http:
        first = http.post("/indexes/w/documents", json={"documents": [{"id": "odd", "text": "Jo", "metadata": ODD_KEYS}]})
        assert first.status_code == 200, first.text
        later = http.post("/indexes/w/documents", json={"documents": [{"id": "e", "text": "Later.", "metadata": {"shop": "west"}}]})
        assert later.status_code == 200, later.text
        hits = http.post("/indexes/w/search", json={"query": "Jo", "instruction": FEEL, "filter": {"shop": "west"}})
        assert sorted(h["id"] for h in hits.json()["hits"]) == ["e", "odd"]
        info = http.get("/indexes/w").json()
        assert info["documents"] == len(DOCS) + 2 and info["collections"][0]["pending"] == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_metadata_is_bounded_in_depth_and_size_before_anything_is_stored(tmp_path, backend) -> None:
    path = build(tmp_path / "deep", backend)
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        deepest = {"id": "deepest", "text": "Deep but allowed.", "metadata": {**nested(MAX_METADATA_DEPTH), "shop": "x"}}
        assert index.add([deepest]) == ["deepest"]
        assert [h.metadata for h in index.search("Deep", FEEL, k=1, filter={"shop": "x"})] == [deepest["metadata"]]
        before = snapshot(index)
        too_large = {"big": "y" * MAX_METADATA_BYTES}
        for metadata, phrase in ((nested(MAX_METADATA_DEPTH + 1), f"deeper than {MAX_METADATA_DEPTH} levels"),
                                 (nested(300), "MAX_METADATA_DEPTH"), (nested(100_000), "MAX_METADATA_DEPTH"),
                                 (too_large, f"the limit is {MAX_METADATA_BYTES}")):
            for write in (index.add, index.upsert, index.store_documents):
                with pytest.raises(LimitExceededError, match=phrase) as refused:
                    write([{"id": "ok", "text": "fine"}, {"id": "bad", "text": "x", "metadata": metadata}])
                assert "'bad'" in str(refused.value)
                assert snapshot(index) == before  # nothing stored, not even the good document
        assert index.add([{"id": "after", "text": "A new field.", "metadata": {"new": True}}]) == ["after"]
        assert_complete(index)


# ----------------------------------------------------------------- the service


@pytest.fixture
def uvicorn_log() -> Iterator[io.StringIO]:
    """What uvicorn logs (its loggers do not propagate, so caplog would not see them)."""
    text = io.StringIO()
    handler = logging.StreamHandler(text)
    logger = logging.getLogger("uvicorn.error")
    logger.addHandler(handler)
    try:
        yield text
    finally:
        logger.removeHandler(handler)


def local_port(response: httpx.Response) -> int:
    """The client-side port of the connection that carried ``response``."""
    return response.extensions["network_stream"].get_extra_info("client_addr")[1]


def test_library_errors_are_answers_that_keep_the_connection_open(tmp_path, uvicorn_log, caplog) -> None:
    encoder = tiny_server_encoder()
    path = build(tmp_path / "conn", "qdrant")
    bad = [
        ("POST", "/indexes/w/search", {"query": "x", "instruction": FEEL, "filter": {"first name": "Jo"}}, 400),
        ("POST", "/indexes/w/search", {"query": "x", "instruction": "Unknown?"}, 404),
        ("POST", "/indexes/w/documents", {"documents": [{"id": "a", "text": "changed"}]}, 409),
        ("POST", "/v1/embeddings", {"input": "x", "instruction": "  "}, 400),
        ("POST", "/indexes/w/documents", {"documents": [{"id": "z", "text": "z", "metadata": nested(40)}]}, 413),
    ]
    with running(encoder, {"w": InstructionIndex.open(path, model=encoder)}) as (url, _), \
            httpx.Client(base_url=url, timeout=30) as http:
        ports = set()
        for method, route, body, status in bad:
            refused = http.request(method, route, json=body)
            assert refused.status_code == status, refused.text
            assert set(refused.json()["error"]) == {"message", "type", "param", "code"}
            assert refused.headers.get("connection") != "close"
            good = http.post("/v1/embeddings", json={"input": "fine", "instruction": FEEL})
            assert good.status_code == 200 and len(good.json()["data"]) == 1
            ports |= {local_port(refused), local_port(good)}
    assert len(ports) == 1  # one connection carried every request
    assert "Traceback" not in uvicorn_log.getvalue() and "Exception in ASGI" not in uvicorn_log.getvalue()
    assert not [r for r in caplog.records if r.exc_info]


def test_characters_per_text_and_per_request_are_bounded(tmp_path) -> None:
    encoder = tiny_server_encoder()
    path = build(tmp_path / "chars", "faiss")
    limits = Settings(max_input_chars=100, max_request_chars=250, default_instruction=FEEL)
    with running(encoder, {"w": InstructionIndex.open(path, model=encoder)}, limits) as (url, _), \
            httpx.Client(base_url=url, timeout=30) as http:
        refusals = [
            ("/v1/embeddings", {"input": ["ok", "y" * 101]}, "input[1] has 101 characters", "up to 100"),
            ("/v1/embeddings", {"input": ["y" * 90] * 3}, "more than 250 characters", "up to 250"),
            ("/v1/embeddings", {"input": "x", "instruction": "Why? " * 30}, "instruction has 150", "up to 100"),
            ("/indexes/w/search", {"query": "q" * 101}, "query has 101", "up to 100"),
            ("/indexes/w/documents", {"documents": [{"id": f"n{i}", "text": "t" * 90} for i in range(3)]},
             "more than 250", "up to 250"),
        ]
        for route, body, *phrases in refusals:
            refused = http.post(route, json=body)
            assert refused.status_code == 413, refused.text
            error = refused.json()["error"]
            assert error["code"] == "too_large" and all(p in error["message"] for p in phrases), error
        assert http.get("/indexes/w").json()["documents"] == len(DOCS)  # the refused add stored nothing
        assert http.post("/v1/embeddings", json={"input": ["y" * 100, "z" * 100]}).status_code == 200
        assert http.post("/indexes/w/search", json={"query": "q" * 100}).status_code == 200


def test_settings_refuse_character_limits_that_are_not_positive() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_input_chars must be a positive integer"):
            Settings(max_input_chars=bad)


def test_k_is_bounded_in_the_library_and_the_api(tmp_path) -> None:
    path = build(tmp_path / "k", "qdrant")
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        for k in (2**64, MAX_K + 1, 0, -1, 2.0, True):
            with pytest.raises(ValueError, match=f"k must be an integer from 1 to {MAX_K}"):
                index.search("x", FEEL, k=k)
        assert len(index.search("x", FEEL, k=MAX_K)) == len(DOCS)
    encoder = tiny_server_encoder()
    with running(encoder, {"r": InstructionIndex.open(path, model=encoder, read_only=True)},
                 Settings(read_only=True)) as (url, _), httpx.Client(base_url=url, timeout=30) as http:
        for k in (2**64, MAX_K + 1):
            refused = http.post("/indexes/r/search", json={"query": "x", "instruction": FEEL, "k": k})
            assert refused.status_code == 400 and str(MAX_K) in refused.json()["error"]["message"], refused.text
        assert len(http.post("/indexes/r/search", json={"query": "x", "instruction": FEEL, "k": MAX_K})
                   .json()["hits"]) == len(DOCS)


@pytest.mark.parametrize("key, phrase", [("clé-secrète", "non-ASCII character at position 2"),
                                         ("two words", "space or control character at position 3"),
                                         ("tab\tkey", "space or control character at position 3")])
def test_api_keys_that_http_cannot_carry_are_refused_at_start_up(key, phrase, capsys, monkeypatch) -> None:
    with pytest.raises(ValueError, match=phrase):
        Settings(api_key=key)
    assert main(["serve", "--api-key", key, "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert phrase in err and key not in err  # the key itself is never echoed
    monkeypatch.setenv("INBEDDER_INDEX_API_KEY", key)
    assert main(["serve", "--port", "0"]) == 2
    assert phrase in capsys.readouterr().err


def test_read_only_beside_a_writer_on_embedded_qdrant_says_why_it_cannot(tmp_path, capsys) -> None:
    path = build(tmp_path / "edge", "qdrant")
    with InstructionIndex.open(path, model=tiny_encoder()) as writer:
        with pytest.raises(IndexLockedError, match="no read-only mode"):
            InstructionIndex.open(path, read_only=True)
        assert main(["search", str(path), "x", "--instruction", FEEL]) == 1
        err = capsys.readouterr().err
        assert "no read-only mode" in err and "inbedder-index serve" in err and "Traceback" not in err
        assert writer.add([{"id": "e", "text": "The writer is unaffected."}]) == ["e"]
    with InstructionIndex.open(path, model=tiny_encoder(), read_only=True) as reader:  # alone, it opens
        assert len(reader) == len(DOCS) + 1


# ----------------------------------------------------------------- migrate


def contents(index: InstructionIndex, instruction: str) -> dict[str, tuple]:
    """Per document: text, metadata, answer and the stored vector's bytes under ``instruction``."""
    ids = index.ids()
    vectors = index.get_vectors(ids, instruction)
    answers = index.answers(instruction, ids)
    return {d.id: (d.text, d.metadata, answers.get(d.id), vectors[d.id].tobytes()) for d in index.get(ids)}


@pytest.mark.parametrize("source_backend, target", [("faiss", ["--backend", "qdrant"]), ("qdrant", ["--backend", "faiss"]),
                                                    ("qdrant", [])])
def test_cli_migrate_moves_an_index_without_loading_its_model(tmp_path, source_backend, target, capsys) -> None:
    source = build(tmp_path / "src", source_backend, DOCS + [{"id": "odd", "text": "Jo", "metadata": ODD_KEYS}],
                   (FEEL, WANT))
    with InstructionIndex.open(source, read_only=True) as original:
        before = {i: contents(original, i) for i in (FEEL, WANT)}
        model = original.stats()["model"]
    # the recorded model ("tiny-llama") exists nowhere on disk: a migration that loaded it would fail
    assert main(["migrate", str(source), str(tmp_path / "dst"), *target, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    expected_backend = target[1] if target else source_backend
    assert report["backend"] == expected_backend and report["documents"] == len(DOCS) + 1
    assert report["copied"] == {FEEL: len(DOCS) + 1, WANT: len(DOCS) + 1}
    assert report["pending"] == {FEEL: 0, WANT: 0}
    with InstructionIndex.open(tmp_path / "dst", model=tiny_encoder()) as moved:
        assert moved.backend == expected_backend and moved.instructions() == [FEEL, WANT]
        assert moved.stats()["model"] == model
        assert_complete(moved)
        for instruction in (FEEL, WANT):
            assert contents(moved, instruction) == before[instruction]
        assert sorted(h.id for h in moved.search("x", FEEL, filter={"shop": "north"})) == ["a", "c"]
        assert moved.add([{"id": "new", "text": "Written after the move."}]) == ["new"]  # a normal index
    assert main(["migrate", str(source), str(tmp_path / "dst"), *target, "--json"]) == 0  # rerun: nothing to do
    assert json.loads(capsys.readouterr().out)["copied"] == {FEEL: 0, WANT: 0}


def test_an_interrupted_migration_is_finished_by_running_it_again(tmp_path, monkeypatch) -> None:
    docs = [{"id": f"d{i}", "text": f"message number {i} about a parcel", "metadata": {"n": i}} for i in range(9)]
    source = build(tmp_path / "src", "faiss", docs, (FEEL, WANT))
    real = InstructionIndex.vectors

    def dies_after_two_batches(self, instruction, batch_size=1024):
        for number, batch in enumerate(real(self, instruction, batch_size)):
            if instruction == WANT and number == 2:
                raise KeyboardInterrupt  # as a Ctrl-C halfway through the second collection
            yield batch

    monkeypatch.setattr(InstructionIndex, "vectors", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        migrate_index(source, tmp_path / "dst", backend="qdrant", batch_size=2)
    monkeypatch.setattr(InstructionIndex, "vectors", real)
    with InstructionIndex.open(tmp_path / "dst", read_only=True) as partial:
        state = {c["instruction"]: (c["count"], c["pending"]) for c in partial.stats()["collections"]}
    assert state == {FEEL: (len(docs), 0), WANT: (4, len(docs))}  # 4 vectors stored, none recorded yet
    report = migrate_index(source, tmp_path / "dst", backend="qdrant", batch_size=2)
    assert report.copied == {FEEL: 0, WANT: len(docs)}  # the unrecorded ones again, upserted by id
    with InstructionIndex.open(tmp_path / "dst", model=tiny_encoder()) as moved, \
            InstructionIndex.open(source, model=tiny_encoder(), read_only=True) as original:
        assert_complete(moved)  # every vector once: counts equal the documents
        for instruction in (FEEL, WANT):
            assert contents(moved, instruction) == contents(original, instruction)


def test_migrate_refuses_an_incomplete_source_and_writes_nothing(tmp_path, capsys) -> None:
    source = build(tmp_path / "src", "faiss")
    with InstructionIndex.open(source, model=tiny_encoder()) as index:
        index.store_documents([{"id": "late", "text": "Stored but never encoded."}])
    with pytest.raises(IncompleteIndexError, match="never encodes"):
        migrate_index(source, tmp_path / "dst")
    assert not (tmp_path / "dst").exists()
    assert main(["migrate", str(source), str(source)]) == 2
    assert "same folder" in capsys.readouterr().err


# ----------------------------------------------------------------- fuzz: metadata shapes


ODD_TEXT = st.sampled_from(["first name", "a.b", "", " ", "\x00", "\ud800", "metadata", "doc_id", "é", "$gt"])
KEYS = st.one_of(st.text(max_size=8), ODD_TEXT)
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70), st.floats(),
                   st.text(max_size=20), ODD_TEXT)
VALUES = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4), st.tuples(inner),
                                                      st.dictionaries(KEYS, inner, max_size=4)), max_leaves=20)
METADATA = st.one_of(st.dictionaries(KEYS, VALUES, max_size=6),
                     st.integers(1, MAX_METADATA_DEPTH + 8).map(nested),
                     st.builds(lambda n: {"big": "z" * n}, st.integers(MAX_METADATA_BYTES - 40, MAX_METADATA_BYTES)),
                     st.dictionaries(st.one_of(st.integers(), st.none(), st.floats()), LEAVES, min_size=1, max_size=2))


def json_round_trip(metadata: dict) -> Any:
    return json.loads(json.dumps(metadata))


@pytest.mark.parametrize("backend", BACKENDS)
def test_fuzzed_metadata_is_stored_exactly_or_refused_with_nothing_stored(tmp_path, backend) -> None:
    path = build(tmp_path / "fuzz", backend)
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        expected = {d["id"]: (d["text"], d["metadata"]) for d in DOCS}
        counter = iter(range(10**6))
        seen: Counter[str] = Counter()

        @settings(FUZZ, max_examples=40)  # each new field name gets a payload index on Qdrant: slow-ish
        @given(metadata=METADATA)
        def add_one(metadata: dict) -> None:
            doc_id = f"f{next(counter)}"
            before = snapshot(index)
            try:
                index.add([{"id": doc_id, "text": f"fuzzed document {doc_id}", "metadata": metadata}])
            except (ValueError, TypeError) as refused:  # a refusal: clear, and nothing stored
                seen["refused"] += 1
                assert "metadata" in str(refused) or "payload" in str(refused)
                assert snapshot(index) == before
            else:
                seen["stored"] += 1
                expected[doc_id] = (f"fuzzed document {doc_id}", json_round_trip(metadata))
                assert index.get([doc_id])[0].metadata == expected[doc_id][1]
            probe = f"p{next(counter)}"  # the index is never wedged: a plain write succeeds
            assert index.add([{"id": probe, "text": "probe", "metadata": {"shop": "probe"}}]) == [probe]
            expected[probe] = ("probe", {"shop": "probe"})

        add_one()
        assert seen["stored"] >= 10 and seen["refused"] >= 10, seen  # both paths were exercised
        assert {d.id: (d.text, d.metadata) for d in index.get(index.ids())} == expected
        assert_complete(index)
        assert sorted(h.id for h in index.search("x", FEEL, k=MAX_K, filter={"shop": "probe"})) == \
            sorted(doc_id for doc_id, (_, m) in expected.items() if m.get("shop") == "probe")


# ----------------------------------------------------------------- fuzz: request bodies


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), ODD_TEXT),
                    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
                    max_leaves=12)
TEXTS = st.one_of(st.text(max_size=40), ODD_TEXT)
IDS = st.one_of(st.sampled_from(["a", "b", "x1", "x2", "x3"]), st.text(min_size=1, max_size=6))
FIELDS = st.sampled_from(["shop", "n", "first name", "x"])
PLAIN = st.dictionaries(st.one_of(KEYS, FIELDS), JSON, max_size=4)  # metadata a client would send
# Per route: a request a client would send (most succeed) or one with any field wrong (refused).
ROUTES = {
    "embed": ("POST", "/v1/embeddings", st.fixed_dictionaries(
        {"input": st.one_of(TEXTS, st.lists(TEXTS, min_size=1, max_size=4))},
        optional={"instruction": st.sampled_from([FEEL, WANT]), "model": st.just("tiny-llama"),
                  "encoding_format": st.sampled_from(["float", "base64"])}), st.fixed_dictionaries(
        {"input": st.one_of(TEXTS, st.lists(TEXTS, max_size=4), JSON)},
        optional={"instruction": st.one_of(TEXTS, JSON), "model": JSON, "encoding_format": JSON,
                  "dimensions": JSON, "user": JSON})),
    "search": ("POST", "/indexes/{name}/search", st.fixed_dictionaries(
        {"query": TEXTS},
        optional={"instruction": st.just(FEEL), "k": st.integers(1, 20),
                  "filter": st.dictionaries(FIELDS, st.one_of(st.text(max_size=5), st.integers(-3, 3)), max_size=2)}),
        st.fixed_dictionaries(
        {"query": st.one_of(TEXTS, JSON)},
        optional={"instruction": st.one_of(TEXTS, JSON), "k": st.one_of(st.integers(), JSON),
                  "filter": st.one_of(st.dictionaries(st.one_of(KEYS, FIELDS), JSON, max_size=2), JSON)})),
    "add": ("POST", "/indexes/{name}/documents", st.fixed_dictionaries(
        {"documents": st.lists(st.fixed_dictionaries({"id": IDS, "text": TEXTS}, optional={"metadata": PLAIN}),
                               min_size=1, max_size=3)}, optional={"upsert": st.booleans()}),
        st.fixed_dictionaries(
        {"documents": st.one_of(st.lists(st.fixed_dictionaries(
            {"id": st.one_of(IDS, JSON), "text": st.one_of(TEXTS, JSON)},
            optional={"metadata": st.one_of(METADATA, JSON), "extra": JSON}), max_size=3), JSON)},
        optional={"upsert": st.one_of(st.booleans(), JSON)})),
    "delete": ("DELETE", "/indexes/{name}/documents", st.fixed_dictionaries({"ids": st.lists(IDS, max_size=3)}),
               st.fixed_dictionaries({"ids": st.one_of(st.lists(st.one_of(IDS, JSON), max_size=3), JSON)})),
}
BODIES = st.one_of(*(st.tuples(st.just(route), st.sampled_from(["faiss", "edge"]), st.one_of(valid, wrong, JSON))
                     for route, (_, _, valid, wrong) in ROUTES.items()))


def send(http: httpx.Client, route: str, name: str, body: Any) -> httpx.Response:
    method, template, _, _ = ROUTES[route]
    content = json.dumps(body).encode()  # ensure_ascii: lone surrogates travel as \\ud800 escapes; NaN as NaN
    return http.request(method, template.format(name=name), content=content,
                        headers={"content-type": "application/json"})


def stored(http: httpx.Client, name: str) -> dict[str, tuple]:
    """Every document of an index as the API returns it, checking it is complete."""
    info = http.get(f"/indexes/{name}").json()
    for collection in info["collections"]:
        assert (collection["pending"], collection["count"]) == (0, info["documents"]), collection
    hits = http.post(f"/indexes/{name}/search", json={"query": "x", "instruction": FEEL, "k": MAX_K}).json()["hits"]
    assert len(hits) == info["documents"]
    return {h["id"]: (h["text"], h["metadata"]) for h in hits}


def test_fuzzed_request_bodies_are_never_a_500_and_never_lose_stored_data(tmp_path, uvicorn_log) -> None:
    encoder = tiny_server_encoder()
    indexes = {name: InstructionIndex.open(build(tmp_path / name, backend), model=encoder)
               for name, backend in (("faiss", "faiss"), ("edge", "qdrant"))}
    with running(encoder, indexes, Settings(default_instruction=FEEL, max_input_chars=200,
                                            max_request_chars=500)) as (url, _), \
            httpx.Client(base_url=url, timeout=60) as http:
        expected = {name: stored(http, name) for name in indexes}
        seen: Counter[tuple[str, int]] = Counter()

        @settings(FUZZ, max_examples=120)
        @given(request=BODIES)
        def one(request: tuple[str, str, Any]) -> None:
            route, name, body = request
            response = send(http, route, name, body)
            seen[route, response.status_code] += 1
            assert response.status_code < 500, response.text
            answer = response.json()
            if response.status_code >= 400:
                assert set(answer["error"]) == {"message", "type", "param", "code"} and answer["error"]["message"]
            elif route == "add":
                for doc in body["documents"]:
                    expected[name][doc["id"]] = (doc["text"], json_round_trip(doc.get("metadata", {})))
            elif route == "delete":
                for doc_id in answer["deleted"]:
                    del expected[name][doc_id]
            assert stored(http, name) == expected[name]  # acknowledged writes are there; refused ones left nothing

        one()
        print(sorted(seen.items()))
        for route in ROUTES:  # every route both answered and refused
            assert seen[route, 200] and sum(n for (r, status), n in seen.items() if r == route and status >= 400), seen
    assert "Traceback" not in uvicorn_log.getvalue()
