"""One suite, every vector backend: the same operations give the same hits and the same errors.

Kinds: FAISS flat, FAISS HNSW, Qdrant embedded (qdrant-edge, with and without payload
indexes), qdrant-client's legacy local mode (still reachable, to read old folders), and a
Qdrant server (with and without payload indexes) when ``INBEDDER_INDEX_TEST_QDRANT_URL``
names one (see tests/qdrant_server.py; skipped with the reason otherwise).

Every backend is checked against a NumPy brute-force reference and the reference filter
semantics of ``backends.base.filter_matches``, so passing here means they agree with each
other. FAISS resolves filters through ``candidate_ids`` (as the index does with its corpus),
Qdrant natively through ``filter``.

The last section runs the index-level features that combine collections with the corpus on
every backend an index can use (FAISS flat and HNSW, embedded Qdrant, a Qdrant server): answer
filters (``"$answer"``) in ``search``, ``search_combined``, ``facets`` and ``ids``, and combined
search against NumPy over the stored vectors.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")

from qdrant_server import SKIP_REASON, server_api_key, server_url  # noqa: E402

from inbedder_index.backends import (  # noqa: E402
    CollectionOwnershipError,
    VectorBackend,
    filter_matches,
    infer_payload_schema,
    make_qdrant_client,
    open_backend,
)
import answered_index as answered  # noqa: E402
from inbedder_index import InBedder, InstructionIndex, search as search_module  # noqa: E402
from inbedder_index.backends.migrate import migrate  # noqa: E402
from inbedder_index.errors import CollectionNotFoundError  # noqa: E402
from tiny_models import make_model  # noqa: E402

DIM = 16
N = 60
COLORS = ("red", "green", "blue")
BIG = 2**60
INDEX_ID = "index-a"


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


IDS = [f"doc-{i}" for i in range(N)]
VECTORS = unit_vectors(N)
METADATA = [
    {
        "color": COLORS[i % 3],
        "size": i % 4,
        "even": i % 2 == 0,
        "weight": (i % 5) / 2,  # floats; 1.0 and 2.0 must match the ints 1 and 2
        "tags": ["first"] if i < 10 else ["later", f"t{i % 2}"],
        "nums": [i % 3, 10 + i % 2],
        "big": BIG + i % 2,  # beyond 2**53: neighbours must stay apart
        "mixed": "one" if i % 3 == 0 else 1,  # a string or a number: no payload index fits
    }
    for i in range(N)
]
PAYLOAD_FIELDS = infer_payload_schema(METADATA)

KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-edge", "qdrant-edge-indexed", "qdrant-legacy-local",
         "qdrant-server", "qdrant-server-indexed"]
QDRANT_KINDS = [kind for kind in KINDS if kind.startswith("qdrant")]


class Env:
    """Opens collections of one backend kind, and 'restarts the process' for persistence tests."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        if kind.startswith("qdrant-server") and server_url() is None:
            pytest.skip(SKIP_REASON)
        self.kind = kind
        self.directory = tmp_path / "collections"
        self.qdrant_path = tmp_path / "qdrant"
        self.prefix = f"ibtest_{uuid.uuid4().hex[:8]}_" if kind.startswith("qdrant-server") else ""
        self.created: set[str] = set()
        self.handle: Any = self._connect()

    def _connect(self) -> Any:
        if self.kind.startswith("qdrant-edge"):
            return make_qdrant_client(path=self.qdrant_path)
        if self.kind == "qdrant-legacy-local":
            return make_qdrant_client(path=self.qdrant_path, legacy_local=True)
        if self.kind.startswith("qdrant-server"):
            return make_qdrant_client(url=server_url(), api_key=server_api_key())
        return None

    def open(self, name: str = "docs", dim: int = DIM, create: bool = True, *, raw_name: bool = False,
             **options: Any) -> VectorBackend:
        full = name if raw_name else self.prefix + name
        options.setdefault("index_id", INDEX_ID)
        if self.kind.endswith("-indexed"):
            options.setdefault("payload_fields", PAYLOAD_FIELDS)
        backend = open_backend(
            "qdrant" if self.handle is not None else "faiss", directory=self.directory, name=full, dim=dim,
            create=create, hnsw=self.kind == "faiss-hnsw", qdrant_client=self.handle, **options,
        )
        self.created.add(full)
        return backend

    def restart(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = self._connect()

    def close(self) -> None:
        if self.handle is None:
            return
        if self.prefix:  # a shared server: leave nothing behind
            for name in self.created:
                if self.handle.client.collection_exists(name):
                    self.handle.client.delete_collection(name)
        self.handle.close()


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    environment = Env(request.param, tmp_path)
    yield environment
    environment.close()


@pytest.fixture(params=QDRANT_KINDS)
def qdrant_env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    environment = Env(request.param, tmp_path)
    yield environment
    environment.close()


@pytest.fixture
def filled(env: Env) -> VectorBackend:
    """A filled collection of its own, for tests that modify it."""
    backend = env.open()
    backend.upsert(IDS, VECTORS, METADATA)
    return backend


@pytest.fixture(scope="module", params=KINDS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorBackend]:
    """A filled collection shared by the tests that must leave it unchanged (the legacy mode is slow to fill)."""
    environment = Env(request.param, tmp_path_factory.mktemp(request.param))
    backend = environment.open()
    backend.upsert(IDS, VECTORS, METADATA)
    yield backend
    environment.close()


def search(
    backend: VectorBackend,
    query: np.ndarray,
    k: int,
    flt: Mapping[str, Any] | None = None,
    metadata: dict[str, dict[str, Any]] | None = None,
) -> list[tuple[str, float]]:
    """Search as the index does: natively filtered, or through candidate ids."""
    if flt is None or backend.filters_payload:
        return backend.search(query, k, filter=flt)
    metadata = metadata if metadata is not None else dict(zip(IDS, METADATA))
    candidates = {doc_id for doc_id, meta in metadata.items() if filter_matches(flt, meta)}
    return backend.search(query, k, candidate_ids=candidates)


def brute_force(
    query: np.ndarray, k: int, ids: list[str], vectors: np.ndarray, allowed: set[str] | None = None
) -> list[tuple[str, float]]:
    scores = vectors @ query
    ranked = [(ids[i], float(scores[i])) for i in np.argsort(-scores)]
    return [hit for hit in ranked if allowed is None or hit[0] in allowed][:k]


def assert_hits_equal(actual: list[tuple[str, float]], expected: list[tuple[str, float]]) -> None:
    assert [doc_id for doc_id, _ in actual] == [doc_id for doc_id, _ in expected]
    np.testing.assert_allclose([s for _, s in actual], [s for _, s in expected], atol=1e-5)


# --------------------------------------------------------------------------- searching


def test_nearest_neighbour_of_a_stored_vector_is_itself(shared: VectorBackend) -> None:
    assert shared.count() == N
    assert shared.ids() == set(IDS)
    for i in (0, 17, N - 1):
        doc_id, score = shared.search(VECTORS[i], 1)[0]
        assert doc_id == IDS[i]
        assert score == pytest.approx(1.0, abs=1e-5)
        assert_hits_equal(shared.search(VECTORS[i], 10), brute_force(VECTORS[i], 10, IDS, VECTORS))


@pytest.mark.parametrize(
    "flt",
    [
        {"color": "red"},
        {"size": 2},
        {"size": 2.5},  # no int equals it
        {"even": True},  # qdrant-edge needs its bool workaround here
        {"even": False},
        {"even": [True, False]},
        {"even": False, "color": "blue"},
        {"size": True},  # a bool never matches a number ...
        {"even": 1},  # ... nor a number a bool
        {"color": ["red", "green"]},
        {"size": [0, 3], "even": True},
        {"weight": [1, 2.0]},  # ints match stored floats numerically
        {"weight": 0.5},
        {"tags": "first"},  # a list-valued field matches any of its elements
        {"tags": ["t1"], "color": ("red", "blue")},
        {"nums": 11},
        {"nums": [2, 99]},
        {"big": BIG + 1},  # a float range cannot tell 2**60 and 2**60 + 1 apart
        {"mixed": "one"},
        {"mixed": [1, "none"]},
        {"color": ["red", 2]},  # any-of across types
        {"size": 1, "even": True},  # nothing matches
        {"color": "purple"},
        {"absent": "x"},
    ],
)
def test_filters_match_the_reference_semantics(shared: VectorBackend, flt: dict[str, Any]) -> None:
    allowed = {doc_id for doc_id, meta in zip(IDS, METADATA) if filter_matches(flt, meta)}
    for i in (0, 31):
        assert_hits_equal(search(shared, VECTORS[i], 8, flt), brute_force(VECTORS[i], 8, IDS, VECTORS, allowed))


def test_candidate_ids_restrict_the_search(shared: VectorBackend) -> None:
    candidates = {IDS[3], IDS[40], IDS[41], "unknown-id"}
    allowed = candidates - {"unknown-id"}
    assert_hits_equal(
        shared.search(VECTORS[0], 10, candidate_ids=candidates),
        brute_force(VECTORS[0], 10, IDS, VECTORS, allowed),
    )
    assert shared.search(VECTORS[0], 10, candidate_ids={"unknown-id"}) == []
    assert shared.search(VECTORS[0], 10, candidate_ids=set()) == []


def test_k_larger_than_the_collection_returns_everything_best_first(shared: VectorBackend) -> None:
    hits = shared.search(VECTORS[7], 10 * N)
    assert len(hits) == N
    assert_hits_equal(hits, brute_force(VECTORS[7], N, IDS, VECTORS))


def test_stored_vectors_read_back_exactly(shared: VectorBackend) -> None:
    stored = shared.get_vectors([IDS[2], IDS[9], "never-stored"])
    assert stored.keys() == {IDS[2], IDS[9]}
    np.testing.assert_allclose(stored[IDS[9]], VECTORS[9], atol=1e-6)


# --------------------------------------------------------------------------- writing


def test_upsert_replaces_the_vector_of_an_existing_id(filled: VectorBackend) -> None:
    replacement = unit_vectors(1, seed=99)
    filled.upsert([IDS[5]], replacement, [METADATA[5]])
    assert filled.count() == N
    np.testing.assert_allclose(filled.get_vectors([IDS[5]])[IDS[5]], replacement[0], atol=1e-6)
    assert filled.search(replacement[0], 1)[0][0] == IDS[5]
    vectors = VECTORS.copy()
    vectors[5] = replacement[0]
    assert_hits_equal(filled.search(VECTORS[5], N), brute_force(VECTORS[5], N, IDS, vectors))


def test_upsert_replaces_the_metadata_filters_see(filled: VectorBackend) -> None:
    changed = dict(METADATA[4], color="purple")
    filled.upsert([IDS[4]], VECTORS[4:5], [changed])
    metadata = dict(zip(IDS, METADATA))
    metadata[IDS[4]] = changed
    assert [d for d, _ in search(filled, VECTORS[4], 5, {"color": "purple"}, metadata)] == [IDS[4]]
    assert IDS[4] not in {d for d, _ in search(filled, VECTORS[4], N, {"color": "green"}, metadata)}


def test_deleted_ids_are_never_returned(filled: VectorBackend) -> None:
    deleted = IDS[:5] + ["never-stored"]
    filled.delete(deleted)
    filled.delete(deleted)  # already gone: fine
    filled.delete([])
    live = IDS[5:]
    assert filled.count() == len(live)
    assert filled.ids() == set(live)
    remaining = filled.get_vectors(IDS[:6])
    assert remaining.keys() == {IDS[5]}
    hits = filled.search(VECTORS[0], N)
    assert {doc_id for doc_id, _ in hits} == set(live)
    assert_hits_equal(hits, brute_force(VECTORS[0], N, live, VECTORS[5:]))


def test_empty_collection(env: Env) -> None:
    backend = env.open()
    assert backend.count() == 0
    assert backend.ids() == set()
    assert backend.search(VECTORS[0], 5) == []
    assert backend.get_vectors([IDS[0]]) == {}
    backend.upsert([], np.empty((0, DIM), np.float32))
    assert backend.count() == 0


def test_state_survives_close_and_reopen(env: Env) -> None:
    backend = env.open()
    backend.upsert(IDS, VECTORS, METADATA)
    backend.delete(IDS[:3])
    backend.flush()
    before = [search(backend, VECTORS[i], 10, {"color": "red"}) for i in (0, 20)]
    backend.close()
    env.restart()

    reopened = env.open(create=False)
    assert reopened.count() == N - 3
    assert reopened.ids() == set(IDS[3:])
    after = [search(reopened, VECTORS[i], 10, {"color": "red"}) for i in (0, 20)]
    for old, new in zip(before, after):
        assert_hits_equal(new, old)
    reopened.close()
    again = env.open(create=True)  # create=True on an existing collection opens it
    assert again.count() == N - 3


def test_close_makes_unflushed_writes_durable(env: Env) -> None:
    backend = env.open()
    backend.upsert(IDS[:4], VECTORS[:4])
    backend.close()
    env.restart()
    assert env.open(create=False).ids() == set(IDS[:4])


def test_read_only_never_creates_and_refuses_writes(env: Env) -> None:
    with pytest.raises(CollectionNotFoundError):
        env.open(create=True, read_only=True)
    writer = env.open()
    writer.upsert(IDS[:3], VECTORS[:3])
    writer.flush()
    reader = env.open(create=False, read_only=True)
    assert reader.ids() == set(IDS[:3])
    for write in (lambda: reader.upsert(IDS[3:4], VECTORS[3:4]), lambda: reader.delete(IDS[:1])):
        with pytest.raises(RuntimeError, match="is open read-only"):
            write()
    assert reader.count() == 3


# --------------------------------------------------------------------------- errors


def nan_vectors() -> np.ndarray:
    vectors = VECTORS[:3].copy()
    vectors[1, 4] = np.nan
    return vectors


@pytest.mark.parametrize(
    ("ids", "vectors", "payloads", "error", "message"),
    [
        (IDS[:3], unit_vectors(3, dim=DIM + 1), None, ValueError, f"dimension {DIM + 1}.*{DIM}"),
        ([IDS[0], "new", IDS[0]], VECTORS[:3], None, ValueError, "duplicate ids.*doc-0"),
        (IDS[:3], nan_vectors(), None, ValueError, "doc-1.*NaN"),
        (IDS[:3], VECTORS[:2], None, ValueError, "2 vectors for 3 ids"),
        (IDS[:2], VECTORS[:2], [{}], ValueError, "1 payloads for 2 ids"),
        ([IDS[0], 7], VECTORS[:2], None, TypeError, "position 1"),
        ("doc-0", VECTORS[:1], None, TypeError, "not a single string"),
        (IDS[:3], VECTORS[0], None, ValueError, "2-D"),
    ],
)
def test_bad_upserts_raise_and_change_nothing(
    shared: VectorBackend, ids: Any, vectors: np.ndarray, payloads: Any, error: type[Exception], message: str
) -> None:
    before = shared.search(VECTORS[0], 10)
    with pytest.raises(error, match=message):
        shared.upsert(ids, vectors, payloads)
    assert shared.count() == N
    assert_hits_equal(shared.search(VECTORS[0], 10), before)
    np.testing.assert_allclose(shared.get_vectors([IDS[0]])[IDS[0]], VECTORS[0], atol=1e-6)


@pytest.mark.parametrize(
    ("vector", "k", "message"),
    [(VECTORS[0][:4], 3, "shape"), (VECTORS[0], 0, "k must be"), (np.full(DIM, np.inf), 3, "NaN or infinity")],
)
def test_bad_queries_raise(shared: VectorBackend, vector: np.ndarray, k: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shared.search(vector, k)


@pytest.mark.parametrize("flt", [{"a.b": 1}, {"a": []}, {"a": {"b": 1}}, {"a": float("nan")}])
def test_bad_filters_raise(shared: VectorBackend, flt: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        search(shared, VECTORS[0], 3, flt)


def test_opening_a_missing_collection_without_create_fails(env: Env) -> None:
    with pytest.raises(CollectionNotFoundError, match="absent'"):
        env.open(name="absent", create=False)


def test_opening_with_another_dimension_fails(env: Env) -> None:
    env.open().close()
    with pytest.raises(ValueError, match=f"dimension {DIM}.*{DIM * 2}"):
        env.open(dim=DIM * 2)


def test_drop_deletes_the_collection(env: Env) -> None:
    backend = env.open()
    backend.upsert(IDS[:3], VECTORS[:3])
    backend.drop()
    with pytest.raises(RuntimeError, match="closed"):
        backend.count()
    with pytest.raises(CollectionNotFoundError):
        env.open(create=False)
    assert not (env.directory / "docs").exists()
    assert env.open().count() == 0  # the name is free again


def test_closed_backend_refuses_calls(env: Env) -> None:
    with env.open() as backend:
        backend.upsert(IDS[:2], VECTORS[:2])
    with pytest.raises(RuntimeError, match="docs' is closed"):
        backend.search(VECTORS[0], 1)


@pytest.mark.parametrize("name", ["", "../escape", ".hidden", "a/b"])
def test_invalid_collection_names_are_refused(env: Env, name: str) -> None:
    with pytest.raises(ValueError, match="invalid collection name"):
        env.open(name=name, raw_name=True)


# --------------------------------------------------------------------------- Qdrant: ownership, moving


def test_a_collection_of_another_index_is_never_touched(qdrant_env: Env) -> None:
    mine = qdrant_env.open(index_id="index-a")
    mine.upsert(IDS[:5], VECTORS[:5], METADATA[:5])
    mine.close()
    for create in (True, False):
        with pytest.raises(CollectionOwnershipError, match="'index-a'.*'index-b'"):
            qdrant_env.open(index_id="index-b", create=create)
    assert qdrant_env.open(index_id="index-a").count() == 5


def test_points_name_their_index_even_where_the_collection_records_none(qdrant_env: Env) -> None:
    anonymous = qdrant_env.open(index_id=None)  # created without an owner on record
    anonymous.upsert(IDS[:2], VECTORS[:2])
    with pytest.raises(CollectionOwnershipError, match="no index id.*'index-a'"):
        qdrant_env.open(index_id="index-a")
    other = qdrant_env.open(name="other", index_id=None)
    qdrant_env.open(name="other", index_id="index-b").upsert(IDS[:2], VECTORS[:2])  # empty: stamped by its writes
    with pytest.raises(CollectionOwnershipError, match="'index-b'.*'index-a'"):
        qdrant_env.open(name="other", index_id="index-a")
    assert other.count() == 2


def test_payload_indexes_are_created_for_the_fields_documents_carry(qdrant_env: Env) -> None:
    if qdrant_env.kind == "qdrant-legacy-local":
        pytest.skip("qdrant-client's local mode has no payload indexes (it scans every point)")
    backend = qdrant_env.open(payload_fields=PAYLOAD_FIELDS)
    assert PAYLOAD_FIELDS == {"color": "keyword", "size": "integer", "even": "bool", "weight": "float",
                              "tags": "keyword", "nums": "integer", "big": "integer"}
    assert backend.payload_indexes() == PAYLOAD_FIELDS
    backend.ensure_payload_indexes({"size": "float"})  # retyped in place
    assert backend.payload_indexes()["size"] == "float"
    with pytest.raises(ValueError, match="'text' of field 'color'"):
        backend.ensure_payload_indexes({"color": "text"})


@pytest.mark.parametrize("source_kind", ["qdrant-edge", "faiss-flat"])
def test_migrate_moves_every_point_with_its_id_and_metadata(env: Env, source_kind: str, tmp_path: Path) -> None:
    source_env = Env(source_kind, tmp_path / "source")
    try:
        source = source_env.open(name="src")
        source.upsert(IDS, VECTORS, METADATA)
        lookup = dict(zip(IDS, METADATA))
        target = env.open()
        target.upsert(["already-there"], unit_vectors(1, seed=3), [{"color": "red"}])
        seen: list[int] = []
        copied = migrate(source, target, batch_size=25, progress=seen.append,
                         metadata=None if source.filters_payload else lambda ids: {d: lookup[d] for d in ids})
        assert copied == N and seen == [25, 50, 60]
        assert target.ids() == set(IDS) | {"already-there"}
        lookup["already-there"] = {"color": "red"}
        vectors = np.vstack([VECTORS, unit_vectors(1, seed=3)])
        for flt in (None, {"color": "red"}, {"even": True, "size": [0, 2]}):
            allowed = {d for d, m in lookup.items() if filter_matches(flt, m)}
            assert_hits_equal(search(target, VECTORS[1], 12, flt, lookup),
                              brute_force(VECTORS[1], 12, IDS + ["already-there"], vectors, allowed))
    finally:
        source_env.close()


# --------------------------------------------------------------------------- index level: answers, combined search

INDEX_KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-edge", "qdrant-server"]
FEEL, WANT, TOPIC = answered.FEEL, answered.WANT, answered.TOPIC
ANSWER_FILTERS = [
    {"$answer": {FEEL: "angry"}},
    {"$answer": {FEEL: ["ANGRY!", "furious"]}},
    {"$answer": {FEEL: ["happy", "calm"], WANT: "a refund."}},
    {"$answer": {WANT: ["help"]}, "lang": "fr"},
    {"$answer": {TOPIC: "billing"}, "n": [0, 1], "lang": ["fr", "de"]},
    {"$answer": {FEEL: "bored"}},  # nobody
    {"lang": "en"},
]


@pytest.fixture(scope="module", params=INDEX_KINDS)
def answered_index(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InstructionIndex]:
    """An index of N documents with chosen vectors and answers under three instructions, per backend."""
    kind = request.param
    if kind == "qdrant-server" and server_url() is None:
        pytest.skip(SKIP_REASON)
    model, tokenizer = make_model("llama")
    encoder = InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)
    server = {"qdrant_url": server_url(), "qdrant_api_key": server_api_key()} if kind == "qdrant-server" else {}
    index = InstructionIndex.open(tmp_path_factory.mktemp(kind) / "idx", model=encoder,
                                  backend="faiss" if kind.startswith("faiss") else "qdrant",
                                  hnsw=kind == "faiss-hnsw", **server)
    answers = answered.answers_for(N)
    answered.write(index, answered.corpus(N),
                   {i: unit_vectors(N, dim=encoder.dim, seed=10 + s) for s, i in enumerate(answers)}, answers)
    yield index
    if server:  # a shared server: leave nothing behind
        for instruction in index.instructions():
            index.drop_instruction(instruction)
    index.close()


def allowed_ids(index: InstructionIndex, flt: Mapping[str, Any]) -> set[str]:
    """The reference: metadata by ``filter_matches``, answers by the normal forms the test knows."""
    given = answered.answers_for(N)
    wanted = {instruction: {answered.NORMALISED.get(a, a.lower().rstrip(".!?")) for a in
                            ([answers] if isinstance(answers, str) else answers)}
              for instruction, answers in flt.get("$answer", {}).items()}
    metadata = {key: value for key, value in flt.items() if key != "$answer"}
    return {doc.id for position, doc in enumerate(index.get(index.ids()))
            if filter_matches(metadata, doc.metadata)
            and all(answered.NORMALISED[given[i][position]] in wanted[i] for i in wanted)}


@pytest.mark.parametrize("flt", ANSWER_FILTERS)
def test_answer_filters_agree_with_the_reference_on_every_backend(answered_index: InstructionIndex,
                                                                  flt: dict[str, Any]) -> None:
    allowed = allowed_ids(answered_index, flt)
    assert answered_index.ids(flt) == [doc_id for doc_id in answered_index.ids() if doc_id in allowed]
    query = unit_vectors(1, dim=answered_index.encoder.dim, seed=77)[0]
    expected = answered.brute_force(answered_index, {TOPIC: query}, {}, allowed)
    assert_hits_equal([(h.id, h.score) for h in answered_index.search_by_vector(query, TOPIC, k=8, filter=flt)],
                      expected[:8])
    given = answered.answers_for(N)
    positions = {doc_id: p for p, doc_id in enumerate(answered_index.ids())}
    counts = Counter(answered.NORMALISED[given[WANT][positions[doc_id]]] for doc_id in allowed)
    assert dict(answered_index.facets(WANT, k=50, filter=flt)) == counts


@pytest.mark.parametrize("flt", [None, *ANSWER_FILTERS[1:4]])
@pytest.mark.parametrize("weights", [None, {FEEL: 0.3, TOPIC: 2.0}, {WANT: 0.0}])
def test_combined_search_agrees_with_brute_force_on_every_backend(
        answered_index: InstructionIndex, flt: dict[str, Any] | None, weights: dict[str, float] | None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_module, "MIN_CANDIDATES", 2)  # widening from few candidates is exercised too
    monkeypatch.setattr(search_module, "CANDIDATES_PER_HIT", 1)
    dim = answered_index.encoder.dim
    queries = {i: unit_vectors(1, dim=dim, seed=40 + s)[0] for s, i in enumerate((FEEL, WANT, TOPIC))}
    allowed = allowed_ids(answered_index, flt or {})
    expected = answered.brute_force(answered_index, queries, weights or {}, allowed)
    given = answered.answers_for(N)
    positions = {doc_id: p for p, doc_id in enumerate(answered_index.ids())}
    for k in (1, 5, N):
        hits = answered_index.search_combined_by_vectors(queries, k=k, weights=weights, filter=flt)
        assert_hits_equal([(h.id, h.score) for h in hits], expected[:k])
        for hit in hits:
            assert hit.answers == {i: given[i][positions[hit.id]] for i in queries}
            assert hit.score == pytest.approx(sum((weights or {}).get(i, 1.0) * s for i, s in hit.scores.items()),
                                              abs=1e-5)
