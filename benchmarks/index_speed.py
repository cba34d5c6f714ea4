"""Build time, query latency (p50/p99), recall@10 and peak memory of the vector backends.

Every configuration goes through the library's own backends (``open_backend``: string ids,
validation and the id mapping in every timing), each in a fresh process:

- ``faiss-flat``: exact search (``IndexIDMap2(IndexFlatIP)``, the library's default);
- ``faiss-hnsw``: HNSW (M=32, efConstruction=200), built once, reopened per ``efSearch`` of the sweep;
- ``qdrant-edge``: embedded Qdrant (qdrant-edge-py), its build timed as upserts + ``flush()``
  (durable, searchable by exact scan) and then ``optimize()`` (the HNSW graph), searched per
  ``hnsw_ef`` and once with ``exact=True``; disk counts allocated blocks (its files are sparse);
- ``qdrant-local``: qdrant-client's legacy local mode (exact NumPy scan per query, one SQLite commit
  per point). A Qdrant server is not measured (none can be installed offline).

Data: ``--n`` L2-normalised points of a clustered, anisotropic Gaussian mixture of the default
model's dimension (576), so that neighbourhoods are structured as with real embeddings; queries
are held-out points; ground truth is NumPy brute force. Query latency is one query per call,
after 10 warm-up queries. Peak memory is VmHWM, reset at the start of each phase. ``--threads 1``
(OpenMP and BLAS in each child) avoids thread pools waiting for time slices on a busy machine.

    python -m benchmarks.index_speed --quick            # n=5,000, 200 queries: checks that it works
    python -m benchmarks.index_speed                    # n=100,000, 1,000 queries
    python -m benchmarks.index_speed --threads 1        # single-threaded (a busy machine)
    python -m benchmarks.index_speed --workdir /tmp/is  # keeps per-configuration results: a rerun resumes
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .harness import MIB, reset_peak

logger = logging.getLogger("benchmarks.index_speed")

# The default model's embedding dimension (hidden size), so that the benchmark does not load the
# model to learn it. Checked against the converted model's config.json when that is on disk.
DEFAULT_MODEL_DIMS = {"smollm2-135m": 576, "inbedder-smollm2-135m": 576}  # the adapter keeps the base width

K = 10
WARMUP_QUERIES = 10


def rss_mb() -> float:
    return harness.rss_bytes() / MIB


def peak_rss_mb() -> float:
    return harness.peak_rss_bytes() / MIB


def default_dim() -> tuple[int, str]:
    """The default model's dimension from the constant, cross-checked with a converted config if present."""
    from inbedder_index.models import DEFAULT_MODEL, cache_root

    dim = DEFAULT_MODEL_DIMS[DEFAULT_MODEL]
    config = cache_root() / "smollm2-135m-instruct" / "config.json"
    if DEFAULT_MODEL == "smollm2-135m" and config.exists():
        hidden = json.loads(config.read_text()).get("hidden_size")
        if hidden is not None and hidden != dim:
            raise SystemExit(f"DEFAULT_MODEL_DIMS says {dim} but {config} says hidden_size={hidden}")
    return dim, DEFAULT_MODEL


def make_mixture(n: int, dim: int, clusters: int, seed: int, alpha: float = 0.5,
                 mean_weight: float = 0.5, chunk: int = 16384) -> np.ndarray:
    """``n`` L2-normalised float32 points of a clustered, anisotropic Gaussian mixture.

    Shape of the distribution (meant to resemble sentence embeddings, not to be easy):
    - a common mean direction (embeddings of one model share a dominant direction);
    - ``clusters`` centres of random sizes (Dirichlet weights) and random spreads;
    - centres and within-cluster noise drawn with a power-law spectrum (variance of component i
      proportional to i^-alpha, in a random rotation): a moderate intrinsic dimension, as
      real embeddings have, rather than isotropic noise in every one of the ``dim`` axes.
    """
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    spectrum = np.arange(1, dim + 1, dtype=np.float64) ** -alpha
    scale = np.sqrt(spectrum / spectrum.sum())  # a draw has expected squared norm 1

    def anisotropic(m: int) -> np.ndarray:
        return (rng.standard_normal((m, dim)) * scale) @ rotation.T

    mean = rng.standard_normal(dim)
    mean /= np.linalg.norm(mean)
    centres = anisotropic(clusters)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(clusters, 2.0))
    spreads = rng.uniform(0.5, 1.1, clusters)
    labels = rng.choice(clusters, size=n, p=weights)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        part = labels[start : start + chunk]
        points = mean_weight * mean + centres[part] + spreads[part, None] * anisotropic(len(part))
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        out[start : start + len(part)] = points
    return out


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, chunk: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k by inner product: (ids, scores), best first."""
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk] @ base.T
        top = np.argpartition(-block, k, axis=1)[:, :k]
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        ids[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        scores[start : start + chunk] = np.take_along_axis(top_scores, order, axis=1)
    return ids, scores


def data_stats(base: np.ndarray, gt_scores: np.ndarray, seed: int) -> dict[str, float]:
    """How clustered the data is: cosine of random pairs vs. of a query's 1st and 10th neighbour.

    ``gt_scores`` holds each query's exact top k+1 scores; the gap between the 10th and 11th is
    how close a call recall@10 has to make (a tiny gap: many near-ties, a hard benchmark).
    """
    rng = np.random.default_rng(seed + 1)
    a = base[rng.integers(0, len(base), 4000)]
    b = base[rng.integers(0, len(base), 4000)]
    random_cos = (a * b).sum(axis=1)
    return {
        "random_pair_cosine_mean": float(random_cos.mean()),
        "random_pair_cosine_p99": float(np.percentile(random_cos, 99)),
        "query_nn1_cosine_mean": float(gt_scores[:, 0].mean()),
        "query_nn10_cosine_mean": float(gt_scores[:, K - 1].mean()),
        "query_nn10_minus_nn11_gap_mean": float((gt_scores[:, K - 1] - gt_scores[:, K]).mean()),
    }


def _iter_batches(path: Path, n: int, dim: int, batch: int):
    """The base vectors, ``batch`` rows at a time, read from the raw file (never all in memory)."""
    for start in range(0, n, batch):
        count = min(batch, n - start)
        block = np.fromfile(path, dtype=np.float32, count=count * dim, offset=start * dim * 4)
        yield [str(i) for i in range(start, start + count)], block.reshape(count, dim)


def _query_phase(backend: Any, queries: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    for vector in queries[:WARMUP_QUERIES]:
        backend.search(vector, K)
    latencies = np.empty(len(queries))
    hits = 0
    for row, vector in enumerate(queries):
        start = time.perf_counter()
        found = backend.search(vector, K)
        latencies[row] = time.perf_counter() - start
        hits += len({int(doc_id) for doc_id, _ in found} & set(gt[row].tolist()))
    ms = latencies * 1000
    return {
        "queries": len(queries),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
        "qps_single_stream": float(len(queries) / latencies.sum()),
        "recall_at_10": hits / (K * len(queries)),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _blas_threads() -> int | None:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return max(counts) if counts else None


def _dir_bytes(path: Path) -> int:
    """Bytes allocated on disk (sparse, preallocated files count only what they hold)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def _dir_apparent_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _disk(store: Path, config: str) -> dict[str, int]:
    disk = {"stored_bytes": _dir_bytes(store), "stored_apparent_bytes": _dir_apparent_bytes(store)}
    if config == "qdrant-edge":
        shard = store / "qdrant-edge" / "bench"
        disk["wal_bytes"] = _dir_bytes(shard / "wal")
        disk["segments_bytes"] = _dir_bytes(shard / "segments")
    return disk


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process; returns its figures."""
    import faiss

    from inbedder_index.backends import make_qdrant_client, open_backend

    if spec.get("threads"):
        faiss.omp_set_num_threads(spec["threads"])
    work = Path(spec["workdir"])
    n, dim, batch = spec["n"], spec["dim"], spec["batch"]
    config = spec["config"]
    if config == "qdrant-local" and spec.get("qdrant_n"):
        n = min(n, spec["qdrant_n"])  # the first n rows, against the parent's ground truth for those rows
    queries = np.load(work / "queries.npy")
    gt = np.load(work / "gt_ids.npy") if n == spec["n"] else np.load(work / f"gt_ids_{n}.npy")
    store = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=work))
    if config.startswith("qdrant"):  # import costs are not index memory: pay them before the baseline
        importlib.import_module("qdrant_client.local.qdrant_local" if config == "qdrant-local" else "qdrant_edge")
    gc.collect()
    baseline = rss_mb()
    resettable = reset_peak()
    result: dict[str, Any] = {
        "config": config,
        "baseline_rss_mb": baseline,
        "peak_reset_supported": resettable,
        "n": n,
        "dim": dim,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "blas_threads": _blas_threads(),
    }

    client = None
    if config == "qdrant-local":
        client = make_qdrant_client(path=store / "qdrant", legacy_local=True)
    elif config == "qdrant-edge":
        client = make_qdrant_client(path=store / "qdrant-edge", search_threads=spec.get("threads"))
    hnsw = config == "faiss-hnsw"
    kind = "qdrant" if config.startswith("qdrant") else "faiss"

    def open_(create: bool, ef_search: int = 128, exact: bool = False) -> Any:
        return open_backend(kind, directory=store, name="bench", dim=dim, create=create, hnsw=hnsw,
                            hnsw_m=spec["m"], ef_construction=spec["ef_construction"], ef_search=ef_search,
                            qdrant_client=client, exact=exact)

    # ---- build
    cpu_start = _cpu_s()
    start = time.perf_counter()
    backend = open_(create=True)
    report_every = max(1, n // batch // 10)
    for number, (ids, vectors) in enumerate(_iter_batches(work / "base.f32", n, dim, batch), 1):
        backend.upsert(ids, vectors)
        if number % report_every == 0:
            done, elapsed = int(ids[-1]) + 1, time.perf_counter() - start
            logger.info("%s: %d/%d vectors upserted, %.0f/s, about %.0f s to go", config, done, n,
                        done / elapsed, (n - done) * elapsed / done)
    backend.flush()
    build_s = time.perf_counter() - start
    result["build_cpu_s"] = _cpu_s() - cpu_start  # well below build_s: the build waited (I/O, fsync) more than it computed
    assert backend.count() == n, (backend.count(), n)
    result["build_s"] = build_s
    result["build_vectors_per_s"] = n / build_s
    if config == "qdrant-edge":  # durable and searchable above; now the HNSW graph that close() would build
        start = time.perf_counter()
        backend.optimize()
        backend.flush()
        result["index_s"] = time.perf_counter() - start
        result["build_total_s"] = build_s + result["index_s"]
        result["engine"] = backend.engine_info()
        result["build_cpu_s"] = _cpu_s() - cpu_start
    result["peak_rss_build_mb"] = peak_rss_mb()
    result["rss_after_build_mb"] = rss_mb()
    logger.info("%s: built %d vectors in %.1f s (+%.1f s indexing; peak RSS %.0f MiB)", config, n, build_s,
                result.get("index_s", 0.0), result["peak_rss_build_mb"])

    # ---- search
    runs = []
    if config == "qdrant-edge":
        result.update(_disk(store, config))
        for ef, exact in [(ef, False) for ef in spec["ef_search"]] + [(None, True)]:
            reset_peak()
            searcher = open_(create=False, ef_search=ef or 128, exact=exact)
            run = {"ef_search": ef, "exact": exact, "open_s": None, **_query_phase(searcher, queries, gt)}
            run["peak_rss_search_mb"] = peak_rss_mb()
            logger.info("%s ef=%s: p50 %.3f ms, recall@10 %.4f", config, ef or "exact", run["p50_ms"],
                        run["recall_at_10"])
            runs.append(run)
        backend.close()
        client.close()
        result["stored_bytes_after_close"] = _dir_bytes(store)
    elif hnsw:
        backend.close()
        del backend
        gc.collect()
        result.update(_disk(store, config))
        for ef in spec["ef_search"]:
            reset_peak()
            start = time.perf_counter()
            backend = open_(create=False, ef_search=ef)
            open_s = time.perf_counter() - start
            run = {"ef_search": ef, "open_s": open_s, **_query_phase(backend, queries, gt)}
            backend.close()
            del backend
            gc.collect()
            run["peak_rss_search_mb"] = peak_rss_mb()
            logger.info("%s ef=%d: p50 %.3f ms, recall@10 %.4f", config, ef, run["p50_ms"], run["recall_at_10"])
            runs.append(run)
    else:
        reset_peak()
        run = {"ef_search": None, "open_s": None, **_query_phase(backend, queries, gt)}
        run["peak_rss_search_mb"] = peak_rss_mb()
        logger.info("%s: p50 %.3f ms, recall@10 %.4f", config, run["p50_ms"], run["recall_at_10"])
        runs.append(run)
        backend.close()
        if client is not None:
            client.close()
        result.update(_disk(store, config))
    result["runs"] = runs
    result["peak_rss_mb"] = max([result["peak_rss_build_mb"]] + [r["peak_rss_search_mb"] for r in runs])
    result["peak_growth_mb"] = result["peak_rss_mb"] - baseline
    result["peak_growth_build_mb"] = result["peak_rss_build_mb"] - baseline
    result["rss_growth_after_build_mb"] = result["rss_after_build_mb"] - baseline
    if not resettable:  # VmHWM then covers the imports too; say so rather than report a wrong figure
        result["note"] = "VmHWM could not be reset: peaks include everything since process start"
    shutil.rmtree(store, ignore_errors=True)
    return result


# --------------------------------------------------------------------------- parent


def run_config(config: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"{config}.result.json"
    if out.exists():  # --workdir of an earlier run of the same settings: its figures stand
        logger.info("reusing %s", out)
        return json.loads(out.read_text())
    env = dict(os.environ)
    if spec.get("threads"):  # before the child imports anything: OpenMP (FAISS, torch) and BLAS (NumPy) pools
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(spec["threads"])
    logger.info("running %s in a fresh process", config)
    start = time.perf_counter()
    result = harness.run_in_child("benchmarks.index_speed", dict(spec, config=config), out, env)
    result["wall_s"] = time.perf_counter() - start
    return result


def _fastest(result: dict[str, Any] | None, recall: float) -> dict[str, Any] | None:
    """The run with the lowest p50 among those reaching ``recall``."""
    runs = [run for run in (result or {}).get("runs", []) if run["recall_at_10"] >= recall]
    return min(runs, key=lambda run: run["p50_ms"], default=None)


def targets(results: list[dict[str, Any]], busy: bool) -> list[str]:
    """The targets for embedded Qdrant, each with its figures and verdict."""
    by_config = {result["config"]: result for result in results}
    edge, local, hnsw = (by_config.get(name) for name in ("qdrant-edge", "qdrant-local", "faiss-hnsw"))
    if edge is None:
        return []
    lines = ["targets (Qdrant embedded):"]
    if local is not None:
        for label, seconds in (("durable", edge["build_s"]), ("durable + HNSW", edge["build_total_s"])):
            ratio = local["build_s"] / seconds
            lines.append(f"  build {ratio:.1f}x faster than qdrant-client local ({label}: {seconds:.1f} s vs "
                         f"{local['build_s']:.1f} s; target >= 10x): {harness.verdict(ratio >= 10)}")
    edge_run, hnsw_run = _fastest(edge, 0.99), _fastest(hnsw, 0.99)
    if edge_run is None:
        lines.append(f"  query: no hnsw_ef reached recall@10 >= 0.99: {harness.verdict(False)}")
    elif hnsw_run is not None:
        ratio = edge_run["p50_ms"] / hnsw_run["p50_ms"]
        lines.append(f"  query p50 {edge_run['p50_ms']:.3f} ms (hnsw_ef {edge_run['ef_search'] or 'exact'}, recall "
                     f"{edge_run['recall_at_10']:.4f}) = {ratio:.1f}x FAISS HNSW's {hnsw_run['p50_ms']:.3f} ms "
                     f"(efSearch {hnsw_run['ef_search']}); target <= 2x at recall >= 0.99: "
                     f"{harness.verdict(ratio <= 2)}")
        if busy:
            lines.append("    (the machine was busy: FAISS's OpenMP latencies are inflated most; compare with --threads 1)")
    lines.append(f"  disk {edge['stored_bytes'] / edge['n']:.0f} B per point ({edge['segments_bytes'] / edge['n']:.0f} "
                 f"segments + {edge['wal_bytes'] / edge['n']:.0f} WAL; raw vector {4 * edge['dim']} B)")
    return lines


DEFAULT_THREADS = "the libraries' own"
LABELS = {"faiss-flat": "FAISS flat (exact)", "faiss-hnsw": "FAISS HNSW", "qdrant-edge": "Qdrant embedded",
          "qdrant-local": "Qdrant legacy local"}


def summary(payload: dict[str, Any]) -> list[str]:
    settings, data = payload["settings"], payload["data"]
    rows = []
    for result in payload["results"]:
        for run in result["runs"]:
            ef = "exact" if run.get("exact") else "-" if run["ef_search"] is None else str(run["ef_search"])
            rows.append((LABELS[result["config"]], f"{result['n']:,}", ef, f"{result['build_s']:.2f}",
                         f"{result['index_s']:.2f}" if "index_s" in result else "-", f"{result['build_cpu_s']:.2f}",
                         f"{run['p50_ms']:.3f}", f"{run['p99_ms']:.3f}", f"{run['recall_at_10']:.4f}",
                         f"{result['stored_bytes'] / MIB:.0f}", f"{result['peak_rss_mb']:.0f}",
                         f"{result['peak_growth_build_mb']:.0f}", f"{run['peak_rss_search_mb'] - result['baseline_rss_mb']:.0f}"))
    return [f"{settings['n']:,} vectors x {settings['dim']}, {settings['queries']:,} queries, k={settings['k']}, "
            f"{settings['clusters']} clusters (random-pair cosine {data['random_pair_cosine_mean']:.3f}, query to its "
            f"1st / 10th neighbour {data['query_nn1_cosine_mean']:.3f} / {data['query_nn10_cosine_mean']:.3f}); "
            f"threads: {settings['threads'] or DEFAULT_THREADS}.", "",
            *harness.table(("configuration", "n", "efSearch", "build s", "+ index s", "build CPU s", "p50 ms", "p99 ms",
                            "recall@10", "disk MB", "peak RSS MB", "+ build MB", "+ search MB"), rows), "",
            f"Build s: upserts until durable; + index s: embedded Qdrant's HNSW build; disk: allocated bytes; raw "
            f"vectors {payload['raw_vector_mb']:.0f} MiB.", "",
            *(f"- {line.strip()}" for line in targets(payload["results"], payload["machine_busy"])[1:])]


def plot(payload: dict[str, Any]) -> Any:
    settings = payload["settings"]
    fig, ax = harness.pyplot().subplots(figsize=(7.5, 5))
    for result in payload["results"]:
        runs = result["runs"]
        recall = [r["recall_at_10"] for r in runs]
        if result["config"] == "qdrant-edge":
            graph = [r for r in runs if not r.get("exact")]
            ax.plot([r["recall_at_10"] for r in graph], [r["p50_ms"] for r in graph], "^-", color="C3",
                    label="Qdrant embedded p50 (hnsw_ef sweep)")
            ax.plot([r["recall_at_10"] for r in graph], [r["p99_ms"] for r in graph], "^--", color="C3", alpha=0.45,
                    label="Qdrant embedded p99")
            exact_runs = [r for r in runs if r.get("exact")]
            ax.plot([r["recall_at_10"] for r in exact_runs], [r["p50_ms"] for r in exact_runs], "v", color="C3",
                    label="Qdrant embedded, exact=True, p50")
        elif result["config"] == "faiss-hnsw":
            ax.plot(recall, [r["p50_ms"] for r in runs], "o-", color="C0", label="FAISS HNSW p50 (efSearch sweep)")
            ax.plot(recall, [r["p99_ms"] for r in runs], "o--", color="C0", alpha=0.45, label="FAISS HNSW p99")
            for r in runs:
                ax.annotate(f"ef={r['ef_search']}", (r["recall_at_10"], r["p50_ms"]), textcoords="offset points",
                            xytext=(-10, 8), fontsize=8)
        else:
            color, marker, name = {"faiss-flat": ("C1", "s", "FAISS flat (exact)"),
                                   "qdrant-local": ("C2", "D", "Qdrant legacy local (exact, NumPy)")}[result["config"]]
            ax.plot(recall, [r["p50_ms"] for r in runs], marker, color=color, label=f"{name} p50")
            ax.plot(recall, [r["p99_ms"] for r in runs], marker, color=color, alpha=0.35, label=f"{name} p99")
    ax.set_yscale("log")
    ax.set_xlabel("recall@10 (vs. exact)")
    ax.set_ylabel("latency per query (ms, log scale)")
    ax.set_title(f"{settings['n']:,} x {settings['dim']}-d clustered vectors, {settings['queries']:,} queries, "
                 f"k={settings['k']}{' (quick)' if payload['quick'] else ''}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


def library_versions() -> dict[str, str]:
    versions = {}
    for module in ("faiss", "qdrant_client", "qdrant_edge", "inbedder_index"):
        try:
            imported = __import__(module)
            versions[module] = getattr(imported, "__version__", "?")
        except ImportError:
            versions[module] = "not installed"
    from importlib.metadata import PackageNotFoundError, version

    for module, package in (("qdrant_client", "qdrant-client"), ("qdrant_edge", "qdrant-edge-py")):
        if versions.get(module) == "?":
            try:
                versions[module] = version(package)
            except PackageNotFoundError:
                versions[module] = "not installed"
    return versions


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, child=True)
    parser.add_argument("--n", type=int, default=100_000, help="stored vectors (default 100,000; --quick: 5,000)")
    parser.add_argument("--queries", type=int, default=None, help="timed queries (default 1,000; --quick: 200)")
    parser.add_argument("--dim", type=int, default=None, help="vector dimension (default: the default model's, 576)")
    parser.add_argument("--clusters", type=int, default=1000, help="mixture components (default 1,000)")
    parser.add_argument("--spectrum-alpha", type=float, default=0.5,
                        help="variance of principal component i ~ i^-alpha (default 0.5; 0 = isotropic, harder)")
    parser.add_argument("--batch", type=int, default=1024, help="vectors per upsert (default 1,024)")
    parser.add_argument("--m", type=int, default=32, help="HNSW M (default 32)")
    parser.add_argument("--ef-construction", type=int, default=200, help="HNSW efConstruction (default 200)")
    parser.add_argument("--ef-search", default="64,128,256", help="HNSW efSearch sweep (default 64,128,256)")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP (FAISS) and BLAS (NumPy) threads in each child (default: the libraries' own)")
    parser.add_argument("--skip-qdrant", action="store_true", help="leave out both Qdrant configurations")
    parser.add_argument("--skip-qdrant-local", action="store_true",
                        help="leave out qdrant-client's legacy local mode (the slowest to build)")
    parser.add_argument("--qdrant-n", type=int, default=None,
                        help="store only the first N vectors in Qdrant local (its build commits once per point: "
                             "slow on a disk with slow fsync); default: all")
    parser.add_argument("--skip-hnsw", action="store_true", help="leave out FAISS HNSW")
    parser.add_argument("--out", default=None, help="results name (default: index_speed, or index_speed_quick)")
    parser.add_argument("--workdir", default=None,
                        help="keep the data and each configuration's result in this folder; a rerun with the same "
                             "folder and settings reuses the results found there (a long run killed partway resumes)")
    args = harness.parse(parser, argv)
    if harness.child_run(args, run_child):
        return 0
    n = 5_000 if args.quick and args.n == 100_000 else args.n
    n_queries = args.queries or (200 if args.quick else 1_000)
    dim, model = default_dim()
    dim = args.dim or dim
    ef_sweep = [int(x) for x in args.ef_search.split(",") if x.strip()]
    configs = (["faiss-flat"] + ([] if args.skip_hnsw else ["faiss-hnsw"]) + ([] if args.skip_qdrant else ["qdrant-edge"])
               + ([] if args.skip_qdrant or args.skip_qdrant_local else ["qdrant-local"]))
    load_start = harness.load_average()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="index_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        logger.info("generating %d + %d vectors of dim %d (%d clusters)", n, n_queries, dim, args.clusters)
        points = make_mixture(n + n_queries, dim, args.clusters, args.seed, alpha=args.spectrum_alpha)
        order = np.random.default_rng(args.seed + 2).permutation(len(points))
        base, queries = points[order[:n]], points[order[n:]]
        del points
        base.tofile(work / "base.f32")
        np.save(work / "queries.npy", queries)
        gt_ids, gt_scores = exact_top_k(base, queries, K + 1)
        np.save(work / "gt_ids.npy", gt_ids[:, :K])
        if args.qdrant_n and args.qdrant_n < n and not args.skip_qdrant:
            np.save(work / f"gt_ids_{args.qdrant_n}.npy", exact_top_k(base[: args.qdrant_n], queries, K)[0])
        stats = data_stats(base, gt_scores, args.seed)
        del base
        spec = {"workdir": str(work), "n": n, "dim": dim, "batch": args.batch, "m": args.m,
                "ef_construction": args.ef_construction, "ef_search": ef_sweep, "threads": args.threads,
                "qdrant_n": args.qdrant_n}
        results = [run_config(config, spec, work) for config in configs]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    info = harness.machine_info("cpu")
    info.update(library_versions())
    info["load_average_1m_start"] = load_start
    info["load_average_1m_end"] = harness.load_average()  # includes this benchmark's own work
    busy = harness.is_busy(load_start, info["usable_cores"])
    if busy:
        logger.warning("load average %.1f before the run on %s cores: latencies are not reliable (OpenMP/BLAS thread "
                       "pools wait for a time slice; --threads 1 avoids most of that)", load_start, info["usable_cores"])
    payload = {
        "quick": args.quick,
        "settings": {"n": n, "queries": n_queries, "dim": dim, "default_model": model, "k": K,
                     "clusters": args.clusters, "spectrum_alpha": args.spectrum_alpha, "batch": args.batch, "hnsw_m": args.m,
                     "ef_construction": args.ef_construction, "ef_search_sweep": ef_sweep,
                     "threads": args.threads, "qdrant_n": args.qdrant_n, "seed": args.seed, "warmup_queries": WARMUP_QUERIES},
        "data": {"kind": "L2-normalised anisotropic Gaussian mixture (see make_mixture)", **stats},
        "raw_vector_mb": n * dim * 4 / MIB,
        "machine": info,
        "results": results,
        "notes": [
            "Every figure goes through inbedder_index.backends (string ids, validation, id mapping included).",
            ("Qdrant embedded is qdrant-edge-py (Qdrant's engine in-process): build_s = upserts + flush "
             "(durable, searchable by exact scan), index_s = optimize() (HNSW graph), searched per hnsw_ef and exact."),
            "Qdrant legacy local is qdrant-client's local mode: exact NumPy search per query, HNSW settings ignored.",
            "Disk (stored_bytes) counts allocated blocks; Qdrant's WAL and vector files are sparse 32 MiB pieces.",
            ("Each configuration ran in a fresh subprocess; peak RSS = VmHWM (reset per phase), "
             "baseline = RSS after imports (incl. torch, imported by inbedder_index) and queries loaded."),
            "FAISS HNSW: built once, reopened from its file per efSearch (open_s is that load time).",
            ("Qdrant local's build is bound by its persistence: qdrant_client/local/persistence.py "
             "CollectionPersistence.persist() commits one SQLite transaction per point (build_cpu_s << build_s)."),
        ],
        "machine_busy": busy,
        "targets": targets(results, busy),
    }
    harness.finish(args.out or ("index_speed_quick" if args.quick else "index_speed"), payload, summary,
                   save=not args.no_save, figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
