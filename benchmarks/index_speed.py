"""Build time, query latency (p50/p99), recall@10 and peak memory of the vector backends.

Each configuration runs through the library's ``open_backend`` in a fresh process: ``faiss-flat``,
``faiss-hnsw``, ``qdrant-edge`` (embedded Qdrant: upserts + ``flush()``, then ``optimize()`` builds
the HNSW graph; searched per ``hnsw_ef`` and exact) and ``qdrant-local`` (qdrant-client's legacy
local mode), on a clustered Gaussian mixture of the default model's width, held-out queries one
per call. Peak memory is VmHWM, reset per phase; disk counts allocated blocks.

    python -m benchmarks.index_speed --quick            # n=5,000, 200 queries
    python -m benchmarks.index_speed --threads 1        # one OpenMP/BLAS thread (a busy machine)
"""

from __future__ import annotations

import gc
import importlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .harness import MIB

logger = logging.getLogger("benchmarks.index_speed")

DIM = 576  # the default model's width (SmolLM2-135M's hidden size; the adapter keeps it): no model load
K = 10
WARMUP_QUERIES = 10
DEFAULT_THREADS = "the libraries' own"
LABELS = {"faiss-flat": "FAISS flat (exact)", "faiss-hnsw": "FAISS HNSW", "qdrant-edge": "Qdrant embedded",
          "qdrant-local": "Qdrant legacy local"}


def make_mixture(n: int, dim: int, clusters: int, seed: int, alpha: float = 0.5,
                 mean_weight: float = 0.5, chunk: int = 16384) -> np.ndarray:
    """``n`` L2-normalised float32 points shaped like sentence embeddings rather than easy noise:
    a shared mean direction, ``clusters`` centres of Dirichlet-random sizes and random spreads,
    centres and noise drawn with a power-law spectrum (variance of component i ~ i^-alpha, in a
    random rotation), so the intrinsic dimension is moderate, as real embeddings' is."""
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
    """How clustered the data is: cosine of random pairs against a query's 1st and 10th neighbour
    (``gt_scores``: each query's exact top k+1; a small 10th-11th gap makes recall@10 hard)."""
    rng = np.random.default_rng(seed + 1)
    random_cos = (base[rng.integers(0, len(base), 4000)] * base[rng.integers(0, len(base), 4000)]).sum(axis=1)
    return {
        "random_pair_cosine_mean": float(random_cos.mean()),
        "random_pair_cosine_p99": float(np.percentile(random_cos, 99)),
        "query_nn1_cosine_mean": float(gt_scores[:, 0].mean()),
        "query_nn10_cosine_mean": float(gt_scores[:, K - 1].mean()),
        "query_nn10_minus_nn11_gap_mean": float((gt_scores[:, K - 1] - gt_scores[:, K]).mean()),
    }


def _batches(path: Path, n: int, dim: int, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """The base vectors, ``batch`` rows at a time, read from the raw file (never all in memory)."""
    for start in range(0, n, batch):
        count = min(batch, n - start)
        block = np.fromfile(path, dtype=np.float32, count=count * dim, offset=start * dim * 4)
        yield [str(i) for i in range(start, start + count)], block.reshape(count, dim)


def _queries(backend: Any, queries: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
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
    return {"queries": len(queries), **{f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 90, 99)},
            "mean_ms": float(ms.mean()), "max_ms": float(ms.max()),
            "qps_single_stream": float(len(queries) / latencies.sum()), "recall_at_10": hits / (K * len(queries))}


def _dir_bytes(path: Path) -> int:
    """Bytes allocated on disk (sparse, preallocated files count only what they hold)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _mb(peak: bool = False) -> float:
    return (harness.peak_rss_bytes() if peak else harness.rss_bytes()) / MIB


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process; returns its figures."""
    import faiss

    from inbedder_index.backends import make_qdrant_client, open_backend

    if spec["threads"]:
        faiss.omp_set_num_threads(spec["threads"])
    work, config, dim = Path(spec["workdir"]), spec["config"], spec["dim"]
    n, queries, gt = spec["n"], np.load(work / "queries.npy"), np.load(work / "gt_ids.npy")
    store = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=work))
    if config.startswith("qdrant"):  # import costs are not index memory: pay them before the baseline
        importlib.import_module("qdrant_client.local.qdrant_local" if config == "qdrant-local" else "qdrant_edge")
    gc.collect()
    baseline = _mb()
    resettable = harness.reset_peak()
    result: dict[str, Any] = {"config": config, "baseline_rss_mb": baseline, "peak_reset_supported": resettable,
                              "n": n, "dim": dim, "faiss_omp_threads": faiss.omp_get_max_threads()}
    client = None
    if config == "qdrant-local":
        client = make_qdrant_client(path=store / "qdrant", legacy_local=True)
    elif config == "qdrant-edge":
        client = make_qdrant_client(path=store / "qdrant-edge", search_threads=spec["threads"])

    def open_(create: bool, ef_search: int = 128, exact: bool = False) -> Any:
        return open_backend("faiss" if client is None else "qdrant", directory=store, name="bench", dim=dim,
                            create=create, hnsw=config == "faiss-hnsw", hnsw_m=spec["m"],
                            ef_construction=spec["ef_construction"], ef_search=ef_search, qdrant_client=client,
                            exact=exact)

    cpu_start, start = time.process_time(), time.perf_counter()
    backend = open_(create=True)
    every = max(1, n // spec["batch"] // 10)
    for number, (ids, vectors) in enumerate(_batches(work / "base.f32", n, dim, spec["batch"]), 1):
        backend.upsert(ids, vectors)
        if number % every == 0:
            logger.info("%s: %s/%d vectors upserted in %.0f s", config, int(ids[-1]) + 1, n,
                        time.perf_counter() - start)
    backend.flush()
    result["build_s"] = time.perf_counter() - start
    assert backend.count() == n, (backend.count(), n)
    result["build_vectors_per_s"] = n / result["build_s"]
    if config == "qdrant-edge":  # durable and searchable above; now the HNSW graph that close() would build
        start = time.perf_counter()
        backend.optimize()
        backend.flush()
        result.update(index_s=time.perf_counter() - start, engine=backend.engine_info())
        result["build_total_s"] = result["build_s"] + result["index_s"]
    result["build_cpu_s"] = time.process_time() - cpu_start  # below build_s where the build waited for fsync
    result.update(peak_rss_build_mb=_mb(peak=True), rss_after_build_mb=_mb())
    logger.info("%s: built %d vectors in %.1f s (+%.1f s indexing; peak RSS %.0f MiB)", config, n,
                result["build_s"], result.get("index_s", 0.0), result["peak_rss_build_mb"])
    if config == "faiss-hnsw":  # searched from its file, reopened per efSearch
        backend.close()
        backend = None
        gc.collect()
    result["stored_bytes"] = _dir_bytes(store)
    if config == "qdrant-edge":
        shard = store / "qdrant-edge" / "bench"
        result.update(wal_bytes=_dir_bytes(shard / "wal"), segments_bytes=_dir_bytes(shard / "segments"))
    reopen = config in ("faiss-hnsw", "qdrant-edge")
    sweep = [(ef, False) for ef in spec["ef_search"]] if reopen else [(None, False)]
    runs = []
    for ef, exact in sweep + ([(None, True)] if config == "qdrant-edge" else []):
        harness.reset_peak()
        start = time.perf_counter()
        searcher = open_(create=False, ef_search=ef or 128, exact=exact) if reopen else backend
        run = {"ef_search": ef, "exact": exact, "open_s": time.perf_counter() - start if reopen else None,
               **_queries(searcher, queries, gt)}
        if config == "faiss-hnsw":
            searcher.close()
            del searcher
            gc.collect()
        run["peak_rss_search_mb"] = _mb(peak=True)
        logger.info("%s ef=%s: p50 %.3f ms, recall@10 %.4f", config, "exact" if exact else ef, run["p50_ms"],
                    run["recall_at_10"])
        runs.append(run)
    if backend is not None:
        backend.close()
    if client is not None:
        client.close()
    result["runs"] = runs
    result["peak_rss_mb"] = max([result["peak_rss_build_mb"]] + [r["peak_rss_search_mb"] for r in runs])
    result.update(peak_growth_mb=result["peak_rss_mb"] - baseline,
                  peak_growth_build_mb=result["peak_rss_build_mb"] - baseline,
                  rss_growth_after_build_mb=result["rss_after_build_mb"] - baseline)
    if not resettable:  # VmHWM then covers the imports too; say so rather than report a wrong figure
        result["note"] = "VmHWM could not be reset: peaks include everything since process start"
    shutil.rmtree(store, ignore_errors=True)
    return result


def run_config(config: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"{config}.result.json"
    if out.exists():  # --workdir of an earlier run of the same settings: its figures stand
        logger.info("reusing %s", out)
        return json.loads(out.read_text())
    env = dict(os.environ)
    if spec["threads"]:  # before the child imports anything: OpenMP (FAISS, torch) and BLAS (NumPy) pools
        env.update({name: str(spec["threads"]) for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                            "MKL_NUM_THREADS")})
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
    lines = []
    if local is not None:
        for label, seconds in (("durable", edge["build_s"]), ("durable + HNSW", edge["build_total_s"])):
            ratio = local["build_s"] / seconds
            lines.append(f"build {ratio:.1f}x faster than qdrant-client local ({label}: {seconds:.1f} s vs "
                         f"{local['build_s']:.1f} s; target >= 10x): {harness.verdict(ratio >= 10)}")
    edge_run, hnsw_run = _fastest(edge, 0.99), _fastest(hnsw, 0.99)
    if edge_run is None:
        lines.append(f"query: no hnsw_ef reached recall@10 >= 0.99: {harness.verdict(False)}")
    elif hnsw_run is not None:
        ratio = edge_run["p50_ms"] / hnsw_run["p50_ms"]
        lines.append(f"query p50 {edge_run['p50_ms']:.3f} ms (hnsw_ef {edge_run['ef_search'] or 'exact'}, recall "
                     f"{edge_run['recall_at_10']:.4f}) = {ratio:.1f}x FAISS HNSW's {hnsw_run['p50_ms']:.3f} ms "
                     f"(efSearch {hnsw_run['ef_search']}); target <= 2x at recall >= 0.99: "
                     f"{harness.verdict(ratio <= 2)}")
        if busy:
            lines.append("(the machine was busy: FAISS's OpenMP latencies are inflated most; compare with --threads 1)")
    lines.append(f"disk {edge['stored_bytes'] / edge['n']:.0f} B per point ({edge['segments_bytes'] / edge['n']:.0f} "
                 f"segments + {edge['wal_bytes'] / edge['n']:.0f} WAL; raw vector {4 * edge['dim']} B)")
    return lines


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
                         f"{result['peak_growth_build_mb']:.0f}",
                         f"{run['peak_rss_search_mb'] - result['baseline_rss_mb']:.0f}"))
    return [f"{settings['n']:,} vectors x {settings['dim']}, {settings['queries']:,} queries, k={settings['k']}, "
            f"{settings['clusters']} clusters (random-pair cosine {data['random_pair_cosine_mean']:.3f}, query to its "
            f"1st / 10th neighbour {data['query_nn1_cosine_mean']:.3f} / {data['query_nn10_cosine_mean']:.3f}); "
            f"threads: {settings['threads'] or DEFAULT_THREADS}.", "",
            *harness.table(("configuration", "n", "efSearch", "build s", "+ index s", "build CPU s", "p50 ms", "p99 ms",
                            "recall@10", "disk MB", "peak RSS MB", "+ build MB", "+ search MB"), rows), "",
            f"Build s: upserts until durable; + index s: embedded Qdrant's HNSW build; disk: allocated bytes; raw "
            f"vectors {payload['raw_vector_mb']:.0f} MiB.", "",
            *(f"- {line}" for line in targets(payload["results"], payload["machine_busy"]))]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, child=True)
    parser.add_argument("--n", type=int, default=None, help="stored vectors (default 100,000; --quick: 5,000)")
    parser.add_argument("--queries", type=int, default=None, help="timed queries (default 1,000; --quick: 200)")
    parser.add_argument("--dim", type=int, default=DIM, help="vector dimension (default: the default model's, 576)")
    parser.add_argument("--clusters", type=int, default=1000, help="mixture components (default 1,000)")
    parser.add_argument("--spectrum-alpha", type=float, default=0.5,
                        help="variance of principal component i ~ i^-alpha (default 0.5; 0 = isotropic, harder)")
    parser.add_argument("--batch", type=int, default=1024, help="vectors per upsert (default 1,024)")
    parser.add_argument("--m", type=int, default=32, help="HNSW M (default 32)")
    parser.add_argument("--ef-construction", type=int, default=200, help="HNSW efConstruction (default 200)")
    parser.add_argument("--ef-search", default="64,128,256", help="HNSW efSearch sweep (default 64,128,256)")
    parser.add_argument("--threads", type=int, default=None, help="OpenMP (FAISS) and BLAS (NumPy) threads per child")
    parser.add_argument("--skip-qdrant", action="store_true", help="leave out both Qdrant configurations")
    parser.add_argument("--skip-qdrant-local", action="store_true", help="leave out qdrant-client's legacy local mode")
    parser.add_argument("--skip-hnsw", action="store_true", help="leave out FAISS HNSW")
    parser.add_argument("--workdir", default=None,
                        help="keep the data and each configuration's result here; a rerun reuses them")
    args = harness.parse(parser, argv)
    if harness.child_run(args, run_child):
        return 0
    from inbedder_index.models import DEFAULT_MODEL

    n = args.n or (5_000 if args.quick else 100_000)
    n_queries = args.queries or (200 if args.quick else 1_000)
    ef_sweep = [int(x) for x in harness.names(args.ef_search)]
    skipped = {"faiss-hnsw": args.skip_hnsw, "qdrant-edge": args.skip_qdrant,
               "qdrant-local": args.skip_qdrant or args.skip_qdrant_local}
    configs = [config for config in LABELS if not skipped.get(config)]
    load_start = harness.load_average()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="index_speed-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        logger.info("generating %d + %d vectors of dim %d (%d clusters)", n, n_queries, args.dim, args.clusters)
        points = make_mixture(n + n_queries, args.dim, args.clusters, args.seed, alpha=args.spectrum_alpha)
        order = np.random.default_rng(args.seed + 2).permutation(len(points))
        base, queries = points[order[:n]], points[order[n:]]
        del points
        base.tofile(work / "base.f32")
        np.save(work / "queries.npy", queries)
        gt_ids, gt_scores = exact_top_k(base, queries, K + 1)
        np.save(work / "gt_ids.npy", gt_ids[:, :K])
        stats = data_stats(base, gt_scores, args.seed)
        del base
        spec = {"workdir": str(work), "n": n, "dim": args.dim, "batch": args.batch, "m": args.m,
                "ef_construction": args.ef_construction, "ef_search": ef_sweep, "threads": args.threads}
        results = [run_config(config, spec, work) for config in configs]
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    info = harness.machine_info("cpu", since=load_start)  # the end's load includes this benchmark's own work
    for module, package in (("faiss", "faiss-cpu"), ("qdrant_client", "qdrant-client"),
                            ("qdrant_edge", "qdrant-edge-py")):
        info[module] = _version(package)
    busy = harness.is_busy(load_start, info["usable_cores"])
    if busy:
        logger.warning("load average %.1f before the run on %s cores: latencies are not reliable (OpenMP/BLAS thread "
                       "pools wait for a time slice; --threads 1 avoids most of that)", load_start, info["usable_cores"])
    payload = {
        "quick": args.quick,
        "settings": {"n": n, "queries": n_queries, "dim": args.dim, "default_model": DEFAULT_MODEL, "k": K,
                     "clusters": args.clusters, "spectrum_alpha": args.spectrum_alpha, "batch": args.batch,
                     "hnsw_m": args.m, "ef_construction": args.ef_construction, "ef_search_sweep": ef_sweep,
                     "threads": args.threads, "seed": args.seed, "warmup_queries": WARMUP_QUERIES},
        "data": {"kind": "L2-normalised anisotropic Gaussian mixture (see make_mixture)", **stats},
        "raw_vector_mb": n * args.dim * 4 / MIB, "machine": info, "results": results, "machine_busy": busy,
        "targets": targets(results, busy),
    }
    harness.finish(args, "index_speed", payload, summary, figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
