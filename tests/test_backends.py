"""Backend-specific behaviour; what every backend shares is in test_backend_congruence.py.

FAISS: its file format, tombstones and crash safety. Qdrant: the handles of
``make_qdrant_client`` (embedded store, legacy local mode, server connection), the
embedded engine's write-ahead log under SIGKILL, and the server path's timeouts, retries,
API keys and TLS against a faulty peer on 127.0.0.1. Also the shared filter helpers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")
pytest.importorskip("qdrant_client")
pytest.importorskip("qdrant_edge")

from qdrant_server import OK_COLLECTIONS, FaultyPeer, http_reply, reset, stall  # noqa: E402
from test_backend_congruence import DIM, IDS, METADATA, VECTORS, assert_hits_equal, brute_force, unit_vectors  # noqa: E402

from inbedder_index.backends import (  # noqa: E402
    BACKEND_KINDS,
    EdgeStore,
    FaissBackend,
    QdrantConnection,
    filter_matches,
    infer_payload_schema,
    make_qdrant_client,
    open_backend,
    validate_filter,
)
from inbedder_index.backends import faiss as faiss_module  # noqa: E402
from inbedder_index.backends.qdrant_common import batches_by_bytes, point_bytes, point_payload  # noqa: E402
from inbedder_index.errors import (  # noqa: E402
    BackendUnavailableError,
    CollectionCorruptError,
    IndexLockedError,
)

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

# --------------------------------------------------------------------------- factory and handles


def test_unknown_backend_kind_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'milvus'.*faiss, qdrant"):
        open_backend("milvus", directory=tmp_path, name="c", dim=DIM, create=True)
    assert BACKEND_KINDS == ("faiss", "qdrant")


def test_qdrant_kind_needs_a_handle(tmp_path: Path) -> None:
    for handle in (None, object()):
        with pytest.raises(ValueError, match="qdrant_client"):
            open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True, qdrant_client=handle)


def test_missing_optional_dependencies_name_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "inbedder-index\[faiss\]"'):
        open_backend("faiss", directory=tmp_path, name="c", dim=DIM, create=True)
    monkeypatch.setitem(sys.modules, "qdrant_edge", None)
    with pytest.raises(ImportError, match=r'qdrant_edge.*pip install "inbedder-index\[qdrant\]"'):
        make_qdrant_client(path=tmp_path / "q")
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    with pytest.raises(ImportError, match=r'qdrant_client.*pip install "inbedder-index\[qdrant\]"'):
        make_qdrant_client(url="http://127.0.0.1:9")


@pytest.mark.parametrize("legacy_local", [False, True])
def test_a_local_qdrant_folder_is_locked_to_one_handle(tmp_path: Path, legacy_local: bool) -> None:
    handle = make_qdrant_client(path=tmp_path / "q", legacy_local=legacy_local)
    try:
        with pytest.raises(IndexLockedError, match="in use"):
            make_qdrant_client(path=tmp_path / "q", legacy_local=legacy_local)
    finally:
        handle.close()
    make_qdrant_client(path=tmp_path / "q", legacy_local=legacy_local).close()  # released by close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of path"),
        ({"path": Path("x"), "url": "http://localhost:6333"}, "exactly one of path"),
        ({"path": Path("x"), "api_key": "k"}, "api_key only applies"),
        ({"url": "http://localhost:6333", "legacy_local": True}, "legacy_local only applies"),
        ({"url": "http://localhost:6333", "retries": -1}, "retries must be"),
        ({"url": "http://localhost:6333", "timeout": 0}, "timeout must be"),
    ],
)
def test_make_qdrant_client_checks_its_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_qdrant_client(**kwargs)


def test_path_gives_the_embedded_engine_and_legacy_local_the_old_client(tmp_path: Path) -> None:
    store = make_qdrant_client(path=tmp_path / "edge")
    legacy = make_qdrant_client(path=tmp_path / "legacy", legacy_local=True)
    try:
        assert isinstance(store, EdgeStore)
        assert isinstance(legacy, QdrantConnection) and legacy.is_local
        for handle in (store, legacy):
            backend = open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True, qdrant_client=handle)
            backend.upsert(IDS[:3], VECTORS[:3])
            backend.close()
        assert (tmp_path / "edge" / "c" / "edge_config.json").is_file()
        assert (tmp_path / "legacy" / "meta.json").is_file()
        assert not list((tmp_path / "edge").rglob("*.sqlite"))  # nothing of qdrant-client's pickled storage
    finally:
        store.close()
        legacy.close()


def test_a_legacy_folder_is_never_opened_by_the_embedded_engine(tmp_path: Path) -> None:
    make_qdrant_client(path=tmp_path / "old", legacy_local=True).close()
    with pytest.raises(ValueError, match="legacy_local=True"):
        make_qdrant_client(path=tmp_path / "old")


def test_a_qdrant_client_given_directly_is_accepted(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    client = QdrantClient(location=":memory:")
    try:
        backend = open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True, qdrant_client=client)
        backend.upsert(IDS[:5], VECTORS[:5])
        assert backend.search(VECTORS[2], 1)[0][0] == IDS[2]
    finally:
        client.close()


@pytest.mark.parametrize("legacy_local", [False, True])
def test_qdrant_combines_filter_and_candidate_ids(tmp_path: Path, legacy_local: bool) -> None:
    handle = make_qdrant_client(path=tmp_path / "q", legacy_local=legacy_local)
    try:
        backend = open_backend("qdrant", directory=tmp_path, name="c", dim=DIM, create=True, qdrant_client=handle)
        backend.upsert(IDS, VECTORS, METADATA)
        candidates = set(IDS[:30])
        allowed = {d for d, m in zip(IDS[:30], METADATA) if m["color"] == "red"}
        assert_hits_equal(
            backend.search(VECTORS[0], 50, filter={"color": "red"}, candidate_ids=candidates),
            brute_force(VECTORS[0], 50, IDS, VECTORS, allowed),
        )
    finally:
        handle.close()


# --------------------------------------------------------------------------- embedded Qdrant


_KILLED_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    from inbedder_index.backends import make_qdrant_client, open_backend
    store = make_qdrant_client(path=sys.argv[1])
    backend = open_backend("qdrant", directory=None, name="c", dim=8, create=True, qdrant_client=store)
    rng = np.random.default_rng(0)
    for batch in range(5):
        ids = [f"d{batch}-{i}" for i in range(100)]
        backend.upsert(ids, rng.standard_normal((100, 8)).astype(np.float32), [{"batch": batch}] * 100)
        print(batch, flush=True)  # acknowledged: the engine accepted this batch (no flush() is called)
    time.sleep(60)
""")


def test_embedded_writes_survive_sigkill_through_the_wal(tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "q")], stdout=subprocess.PIPE,
                              text=True)
    try:
        acknowledged = [writer.stdout.readline() for _ in range(5)]
        assert [line.strip() for line in acknowledged] == ["0", "1", "2", "3", "4"]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    store = make_qdrant_client(path=tmp_path / "q")  # the dead writer's lock is gone with it
    try:
        backend = open_backend("qdrant", directory=None, name="c", dim=8, create=False, qdrant_client=store)
        assert backend.count() == 500
        assert len(backend.search(np.ones(8, np.float32), 500, filter={"batch": 4})) == 100
    finally:
        store.close()


def test_embedded_search_with_hnsw_or_exact_agrees_after_optimize(tmp_path: Path) -> None:
    store = make_qdrant_client(path=tmp_path / "q")
    try:
        approximate = open_backend("qdrant", directory=None, name="c", dim=DIM, create=True, qdrant_client=store)
        approximate.upsert(IDS, VECTORS, METADATA)
        approximate.optimize()
        exact = open_backend("qdrant", directory=None, name="c", dim=DIM, create=False, qdrant_client=store, exact=True)
        for query in VECTORS[:5]:
            assert_hits_equal(approximate.search(query, 10), exact.search(query, 10))
            assert_hits_equal(exact.search(query, 10), brute_force(query, 10, IDS, VECTORS))
    finally:
        store.close()


def test_an_embedded_collection_without_its_config_is_reported(tmp_path: Path) -> None:
    store = make_qdrant_client(path=tmp_path / "q")
    try:
        open_backend("qdrant", directory=None, name="c", dim=DIM, create=True, qdrant_client=store).close()
        config = tmp_path / "q" / "c" / "edge_config.json"
        config.write_text("{not json")
        with pytest.raises(CollectionCorruptError, match="edge_config.json"):
            open_backend("qdrant", directory=None, name="c", dim=DIM, create=False, qdrant_client=store)
    finally:
        store.close()


def test_an_unreadable_embedded_shard_is_reported_and_can_still_be_dropped(tmp_path: Path) -> None:
    store = make_qdrant_client(path=tmp_path / "q")
    open_backend("qdrant", directory=None, name="c", dim=DIM, create=True, qdrant_client=store).close()
    store.close()
    for segment in (tmp_path / "q" / "c" / "segments").iterdir():
        (segment / "segment.json").write_text("{")
    store = make_qdrant_client(path=tmp_path / "q")
    try:
        with pytest.raises(CollectionCorruptError, match="cannot open the embedded Qdrant collection"):
            open_backend("qdrant", directory=None, name="c", dim=DIM, create=False, qdrant_client=store)
        store.remove("c")
        assert not (tmp_path / "q" / "c").exists()
        assert open_backend("qdrant", directory=None, name="c", dim=DIM, create=True, qdrant_client=store).count() == 0
    finally:
        store.close()


def test_an_interrupted_drop_is_finished_on_the_next_open(tmp_path: Path) -> None:
    make_qdrant_client(path=tmp_path / "q").close()
    leftover = tmp_path / "q" / ".dropped-c-1234abcd"
    (leftover / "segments").mkdir(parents=True)
    make_qdrant_client(path=tmp_path / "q").close()
    assert not leftover.exists()


# --------------------------------------------------------------------------- server path, faulty peer


def test_an_unreachable_qdrant_server_is_reported() -> None:
    with pytest.raises(BackendUnavailableError, match=r"cannot reach Qdrant at http://127\.0\.0\.1:9"):
        make_qdrant_client(url="http://127.0.0.1:9", retries=0)


@pytest.mark.parametrize("first", [reset, http_reply(503), http_reply(502)], ids=["reset", "503", "502"])
def test_transient_failures_are_retried(first: Any) -> None:
    peer = FaultyPeer([first, first, http_reply(200, OK_COLLECTIONS)])
    try:
        connection = make_qdrant_client(url=peer.url, retries=2)
        connection.close()
        assert len(peer.requests) == 3
    finally:
        peer.stop()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_retries_give_up_with_the_reason_and_without_the_api_key() -> None:
    peer = FaultyPeer([http_reply(503)])
    try:
        with pytest.raises(BackendUnavailableError, match="503") as caught:
            make_qdrant_client(url=peer.url, api_key="s3cret-key", retries=1)
        assert "s3cret" not in str(caught.value)
        assert len(peer.requests) == 2
        assert all(b"api-key: s3cret-key" in request.lower() for request in peer.requests)
    finally:
        peer.stop()


def test_a_bad_request_is_not_retried() -> None:
    peer = FaultyPeer([http_reply(400, b'{"status":{"error":"bad"}}')])
    try:
        with pytest.raises(BackendUnavailableError, match="400"):
            make_qdrant_client(url=peer.url, retries=3)
        assert len(peer.requests) == 1
    finally:
        peer.stop()


def test_a_stalled_server_times_out() -> None:
    peer = FaultyPeer([stall(3)])
    try:
        with pytest.raises(BackendUnavailableError, match="cannot reach Qdrant"):
            make_qdrant_client(url=peer.url, timeout=1, retries=0)
    finally:
        peer.stop()


def test_an_https_url_speaks_tls() -> None:
    peer = FaultyPeer([reset])
    try:
        with pytest.raises(BackendUnavailableError):
            make_qdrant_client(url=peer.url.replace("http://", "https://"), api_key="k", retries=0)
        assert peer.requests and peer.requests[0][:1] == b"\x16"  # a TLS handshake record, not plain HTTP
        assert b"api-key" not in peer.requests[0]  # the key only travels inside TLS
    finally:
        peer.stop()


# --------------------------------------------------------------------------- Qdrant helpers


def test_upsert_batches_are_bounded_by_bytes() -> None:
    from qdrant_client import models

    rng = np.random.default_rng(1)
    for dim, metadata in ((8, {}), (576, {"shop": "north", "tags": ["a", "é"] * 20}), (64, {"n": 1.5e-300})):
        vector = rng.standard_normal(dim).astype(np.float32).tolist()
        payload = point_payload("doc-ü", metadata, "index-a")
        actual = len(models.PointStruct(id="5b0a8f4e-3c1d-4e6a-9f27-8d2c61b7e9a3", vector=vector,
                                        payload=payload).model_dump_json().encode())
        assert actual <= point_bytes(dim, payload) <= 2 * actual + 256
    sizes = [40, 40, 40, 100, 10, 10]
    assert list(batches_by_bytes(sizes, 100)) == [slice(0, 2), slice(2, 3), slice(3, 4), slice(4, 6)]
    assert list(batches_by_bytes([500], 100)) == [slice(0, 1)]  # an oversized point goes alone
    assert list(batches_by_bytes([], 100)) == []


def test_infer_payload_schema_types_each_field() -> None:
    schema = infer_payload_schema([
        {"s": "a", "i": 1, "f": 1.5, "b": True, "n": 1, "l": ["x", "y"], "mixed": "a", "obj": {"a": 1}},
        {"s": "b", "i": 2, "f": 2, "b": False, "n": 2.5, "l": [], "mixed": 3},
    ])
    assert schema == {"s": "keyword", "i": "integer", "f": "float", "b": "bool", "n": "float", "l": "keyword"}
    assert json.dumps(schema)  # plain strings: recordable in a manifest


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
