"""One behavioural suite run against every vector backend, with real FAISS and real Qdrant.

Every backend is checked against a NumPy brute-force reference, so passing here also means
the backends agree with each other.  FAISS resolves metadata filters through
``candidate_ids`` (as the index manager does with the corpus) and Qdrant through ``filter``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("qdrant_client")

from qdrant_client import QdrantClient  # noqa: E402

from inbedder_index.backends import (  # noqa: E402
    BACKEND_KINDS,
    FaissBackend,
    VectorBackend,
    filter_matches,
    make_qdrant_client,
    open_backend,
    validate_filter,
)
from inbedder_index.backends import faiss as faiss_module  # noqa: E402
from inbedder_index.errors import (  # noqa: E402
    BackendUnavailableError,
    CollectionCorruptError,
    CollectionNotFoundError,
    IndexLockedError,
)

DIM = 16
N = 60
COLORS = ("red", "green", "blue")


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
    }
    for i in range(N)
]


class Env:
    """Opens collections of one backend kind, and 'restarts the process' for persistence tests."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.directory = tmp_path / "collections"
        self.qdrant_path = tmp_path / "qdrant"
        self.client: QdrantClient | None = make_qdrant_client(path=self.qdrant_path) if kind == "qdrant-local" else None

    def open(self, name: str = "docs", dim: int = DIM, create: bool = True) -> VectorBackend:
        return open_backend(
            "qdrant" if self.client else "faiss",
            directory=self.directory,
            name=name,
            dim=dim,
            create=create,
            hnsw=self.kind == "faiss-hnsw",
            qdrant_client=self.client,
        )

    def restart(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = make_qdrant_client(path=self.qdrant_path)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


KINDS = ["faiss-flat", "faiss-hnsw", "qdrant-local"]


@pytest.fixture(params=KINDS)
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
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
    """A filled collection shared by the tests that must leave it unchanged.

    Sharing keeps the suite fast: embedded Qdrant commits every point to SQLite one by one.
    """
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
    """Search as the index manager will: natively filtered, or through candidate ids."""
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


# --------------------------------------------------------------------------- every backend


def test_nearest_neighbour_of_a_stored_vector_is_itself(shared: VectorBackend) -> None:
    assert shared.count() == N
    assert shared.ids() == set(IDS)
    for i in (0, 17, N - 1):
        doc_id, score = shared.search(VECTORS[i], 1)[0]
        assert doc_id == IDS[i]
        assert score == pytest.approx(1.0, abs=1e-5)
        assert_hits_equal(shared.search(VECTORS[i], 10), brute_force(VECTORS[i], 10, IDS, VECTORS))


def test_upsert_replaces_the_vector_of_an_existing_id(filled: VectorBackend) -> None:
    replacement = unit_vectors(1, seed=99)
    filled.upsert([IDS[5]], replacement, [METADATA[5]])
    assert filled.count() == N
    np.testing.assert_allclose(filled.get_vectors([IDS[5]])[IDS[5]], replacement[0], atol=1e-6)
    assert filled.search(replacement[0], 1)[0][0] == IDS[5]
    vectors = VECTORS.copy()
    vectors[5] = replacement[0]
    assert_hits_equal(filled.search(VECTORS[5], N), brute_force(VECTORS[5], N, IDS, vectors))


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
    np.testing.assert_allclose(remaining[IDS[5]], VECTORS[5], atol=1e-6)
    hits = filled.search(VECTORS[0], N)
    assert {doc_id for doc_id, _ in hits} == set(live)
    assert_hits_equal(hits, brute_force(VECTORS[0], N, live, VECTORS[5:]))


@pytest.mark.parametrize(
    "flt",
    [
        {"color": "red"},
        {"size": 2},
        {"even": True},
        {"even": False, "color": "blue"},
        {"color": ["red", "green"]},
        {"size": [0, 3], "even": True},
        {"weight": [1, 2.0]},  # ints match stored floats numerically
        {"tags": "first"},  # a list-valued field matches any of its elements
        {"tags": ["t1"], "color": ("red", "blue")},
        {"size": 1, "even": True},  # nothing matches
        {"color": "purple"},
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


def test_opening_a_missing_collection_without_create_fails(env: Env) -> None:
    with pytest.raises(CollectionNotFoundError, match="'absent'"):
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


def test_closed_backend_refuses_calls(env: Env) -> None:
    with env.open() as backend:
        backend.upsert(IDS[:2], VECTORS[:2])
    with pytest.raises(RuntimeError, match="'docs' is closed"):
        backend.search(VECTORS[0], 1)


def test_invalid_collection_names_are_refused(env: Env) -> None:
    for name in ("", "../escape", ".hidden", "a/b"):
        with pytest.raises(ValueError, match="invalid collection name"):
            env.open(name=name)


# --------------------------------------------------------------------------- cross-backend


def test_exact_faiss_and_qdrant_return_identical_ids_and_scores(tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(150)]
    vectors = unit_vectors(150, dim=32, seed=7)
    metadata = [{"group": i % 7, "flag": i % 3 == 0} for i in range(150)]
    queries = unit_vectors(10, dim=32, seed=8)
    client = make_qdrant_client(path=tmp_path / "qdrant")
    try:
        faiss_backend = open_backend("faiss", directory=tmp_path, name="c", dim=32, create=True)
        qdrant_backend = open_backend("qdrant", directory=tmp_path, name="c", dim=32, create=True, qdrant_client=client)
        for backend in (faiss_backend, qdrant_backend):
            backend.upsert(ids, vectors, metadata)
        lookup = dict(zip(ids, metadata))
        for flt in (None, {"group": [1, 4]}, {"flag": True, "group": 3}):
            for query in queries:
                faiss_hits = search(faiss_backend, query, 15, flt, lookup)
                assert faiss_hits
                assert_hits_equal(search(qdrant_backend, query, 15, flt, lookup), faiss_hits)
    finally:
        client.close()


# --------------------------------------------------------------------------- FAISS specifics


def test_faiss_refuses_a_metadata_filter(tmp_path: Path) -> None:
    backend = FaissBackend(tmp_path, "c", DIM, create=True)
    with pytest.raises(ValueError, match="candidate_ids"):
        backend.search(VECTORS[0], 3, filter={"color": "red"})


@pytest.mark.parametrize("hnsw", [False, True])
def test_faiss_selector_path_matches_the_exact_candidate_path(tmp_path: Path, hnsw: bool) -> None:
    backend = FaissBackend(tmp_path, "c", DIM, create=True, hnsw=hnsw)
    backend.upsert(IDS, VECTORS)
    backend.delete(IDS[:4])  # tombstones for HNSW, below the rebuild threshold
    candidates = set(IDS[::2])
    exact = backend.search(VECTORS[1], 12, candidate_ids=candidates)
    backend.exact_candidate_limit = 0  # force the IDSelector path
    assert_hits_equal(backend.search(VECTORS[1], 12, candidate_ids=candidates), exact)
    assert_hits_equal(exact, brute_force(VECTORS[1], 12, IDS[4:], VECTORS[4:], candidates))


def test_hnsw_tombstones_are_excluded_then_rebuilt_away(tmp_path: Path) -> None:
    backend = FaissBackend(tmp_path, "c", DIM, create=True, hnsw=True)
    ids, vectors = IDS[:40], VECTORS[:40]
    backend.upsert(ids, vectors)

    backend.delete(ids[:10])  # exactly 25%: kept as tombstones
    assert backend.tombstone_count == 10
    assert_hits_equal(backend.search(vectors[0], 40), brute_force(vectors[0], 40, ids[10:], vectors[10:]))
    backend.close()
    backend = FaissBackend(tmp_path, "c", DIM, create=False, hnsw=True)  # tombstones persist
    assert backend.tombstone_count == 10
    assert backend.count() == 30

    backend.upsert([ids[10]], unit_vectors(1, seed=5))  # a replacement tombstones the old vector
    assert backend.tombstone_count == 0  # 11 > 25% of 41: rebuilt from the live vectors
    vectors = vectors.copy()
    vectors[10] = unit_vectors(1, seed=5)[0]
    assert backend.ids() == set(ids[10:])
    for query in (vectors[0], vectors[10], vectors[25]):
        assert_hits_equal(backend.search(query, 40), brute_force(query, 40, ids[10:], vectors[10:]))
    backend.close()
    reopened = FaissBackend(tmp_path, "c", DIM, create=False, hnsw=True)
    assert_hits_equal(reopened.search(vectors[25], 5), brute_force(vectors[25], 5, ids[10:], vectors[10:]))


def test_a_failed_flush_keeps_the_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    backend = FaissBackend(tmp_path, "c", DIM, create=True)
    backend.upsert(IDS[:10], VECTORS[:10])
    backend.flush()
    backend.upsert(IDS[10:20], VECTORS[10:20])
    backend.delete(IDS[:2])

    def crash(src: str, dst: str) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(faiss_module.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        backend.flush()
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "c").iterdir()] == [faiss_module.FILENAME]

    survivor = FaissBackend(tmp_path, "c", DIM, create=False)
    assert survivor.ids() == set(IDS[:10])
    assert_hits_equal(survivor.search(VECTORS[0], 3), brute_force(VECTORS[0], 3, IDS[:10], VECTORS[:10]))


def test_a_half_written_temp_file_is_ignored_and_cleaned_up(tmp_path: Path) -> None:
    FaissBackend(tmp_path, "c", DIM, create=True).close()
    backend = FaissBackend(tmp_path, "c", DIM, create=False)
    backend.upsert(IDS[:5], VECTORS[:5])
    backend.close()
    # A process killed in the middle of flush() leaves a partial temporary file behind.
    stale = tmp_path / "c" / f".{faiss_module.FILENAME}.killed.tmp"
    stale.write_bytes(faiss_module.MAGIC + b"\x10\x00")
    reopened = FaissBackend(tmp_path, "c", DIM, create=False)
    assert reopened.ids() == set(IDS[:5])
    assert not stale.exists()


@pytest.mark.parametrize("content", [b"", b"garbage", faiss_module.MAGIC + b"\xff" * 8])
def test_an_unreadable_file_raises_collection_corrupt(tmp_path: Path, content: bytes) -> None:
    FaissBackend(tmp_path, "c", DIM, create=True).close()
    (tmp_path / "c" / faiss_module.FILENAME).write_bytes(content)
    with pytest.raises(CollectionCorruptError, match="cannot read FAISS collection"):
        FaissBackend(tmp_path, "c", DIM, create=False)


def test_faiss_refuses_to_open_flat_as_hnsw(tmp_path: Path) -> None:
    FaissBackend(tmp_path, "c", DIM, create=True).close()
    with pytest.raises(ValueError, match=r"exact \(flat\) search but is opened with hnsw=True"):
        FaissBackend(tmp_path, "c", DIM, create=False, hnsw=True)


# --------------------------------------------------------------------------- factory and clients


def test_unknown_backend_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'milvus'.*faiss, qdrant"):
        open_backend("milvus", directory=tmp_path, name="c", dim=DIM, create=True)
    assert BACKEND_KINDS == ("faiss", "qdrant")


def test_qdrant_kind_needs_a_client(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="qdrant_client"):
        open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True)


def test_missing_optional_dependencies_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "inbedder-index\[faiss\]"'):
        open_backend("faiss", directory=tmp_path, name="c", dim=DIM, create=True)
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(ImportError, match=r'pip install "inbedder-index\[qdrant\]"'):
        make_qdrant_client(path=tmp_path / "q")


def test_a_local_qdrant_folder_is_locked_to_one_client(tmp_path: Path) -> None:
    client = make_qdrant_client(path=tmp_path / "q")
    try:
        with pytest.raises(IndexLockedError, match="in use"):
            make_qdrant_client(path=tmp_path / "q")
    finally:
        client.close()


def test_an_unreachable_qdrant_server_is_reported() -> None:
    with pytest.raises(BackendUnavailableError, match=r"cannot reach Qdrant at http://127\.0\.0\.1:9"):
        make_qdrant_client(url="http://127.0.0.1:9")


@pytest.mark.parametrize("kwargs", [{}, {"path": Path("x"), "url": "http://localhost:6333"}])
def test_make_qdrant_client_needs_exactly_one_location(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="exactly one of path"):
        make_qdrant_client(**kwargs)


def test_qdrant_combines_filter_and_candidate_ids(tmp_path: Path) -> None:
    client = make_qdrant_client(path=tmp_path / "q")
    try:
        backend = open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True, qdrant_client=client)
        backend.upsert(IDS, VECTORS, METADATA)
        candidates = set(IDS[:30])
        allowed = {d for d, m in zip(IDS[:30], METADATA) if m["color"] == "red"}
        assert_hits_equal(
            backend.search(VECTORS[0], 50, filter={"color": "red"}, candidate_ids=candidates),
            brute_force(VECTORS[0], 50, IDS, VECTORS, allowed),
        )
    finally:
        client.close()


# --------------------------------------------------------------------------- filter helpers


@pytest.mark.parametrize(
    ("flt", "metadata", "expected"),
    [
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": 1}, {"a": True}, False),
        ({"a": True}, {"a": 1}, False),
        ({"a": True}, {"a": True}, True),
        ({"a": "1"}, {"a": 1}, False),
        ({"a": "x"}, {"a": ["y", "x"]}, True),
        ({"a": "x"}, {"a": {"b": "x"}}, False),
        ({"a": "x"}, {}, False),
        ({"a": ["x", 2]}, {"a": 2}, True),
        ({"a": "x", "b": 2}, {"a": "x", "b": 3}, False),
        ({}, {"a": 1}, True),
        (None, {}, True),
    ],
)
def test_filter_matches_semantics(flt: Any, metadata: dict[str, Any], expected: bool) -> None:
    assert filter_matches(flt, metadata) is expected


@pytest.mark.parametrize(
    ("flt", "message"),
    [
        (["color"], "must be a mapping"),
        ({"": 1}, "not a valid name"),
        ({"a.b": 1}, "not a valid name"),
        ({"a": []}, "empty any-of list"),
        ({"a": {"b": 1}}, "must be a str, int, float or bool"),
        ({"a": [1, None]}, "must be a str, int, float or bool"),
        ({"a": float("nan")}, "not finite"),
    ],
)
def test_validate_filter_rejects_bad_filters(flt: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_filter(flt)


def test_validate_filter_normalises_to_tuples() -> None:
    assert validate_filter({"a": "x", "b": [1, 2]}) == {"a": ("x",), "b": (1, 2)}
    assert validate_filter(None) == {}


def test_temp_files_live_next_to_the_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rename that publishes a flush must stay within one folder (one filesystem)."""
    renames: list[tuple[str, str]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        renames.append((src, dst))
        real_replace(src, dst)

    monkeypatch.setattr(faiss_module.os, "replace", spy)
    FaissBackend(tmp_path, "c", DIM, create=True)
    ((src, dst),) = renames
    assert Path(src).parent == Path(dst).parent == tmp_path / "c"
