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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .harness import MIB

logger = logging.getLogger("benchmarks.index_speed")

DIM = 576  # the default model's width (SmolLM2-135M's hidden size; the adapter keeps it): no model load
K = 10
WARMUP_QUERIES = 10
LABELS = {"faiss-flat": "FAISS flat (exact)", "faiss-hnsw": "FAISS HNSW", "qdrant-edge": "Qdrant embedded",
          "qdrant-local": "Qdrant legacy local"}
STYLES = {  # the figure's colour, marker, name and swept parameter (a line through the sweep) per configuration
    "faiss-flat": ("C1", "s", "FAISS flat (exact)", None), "faiss-hnsw": ("C0", "o", "FAISS HNSW", "efSearch"),
    "qdrant-edge": ("C3", "^", "Qdrant embedded", "hnsw_ef"),
    "qdrant-local": ("C2", "D", "Qdrant legacy local (exact, NumPy)", None),
}


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
    """Brute-force top-k by inner product: (ids, scores), best first (all of ``base`` when it holds at most k)."""
    k = min(k, len(base))
    ids = np.empty((len(queries), k), dtype=np.int64)
    scores = np.empty((len(queries), k), dtype=np.float32)
    for start in range(0, len(queries), chunk):
        block = queries[start : start + chunk] @ base.T
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        ids[start : start + chunk] = np.take_along_axis(top, order, axis=1)
        scores[start : start + chunk] = np.take_along_axis(top_scores, order, axis=1)
    return ids, scores


def data_stats(base: np.ndarray, gt_scores: np.ndarray, seed: int) -> dict[str, float]:
    """How clustered the data is: the cosine of random pairs against a query's 1st and 10th neighbour."""
    pairs = np.random.default_rng(seed + 1).integers(0, len(base), (2, 4000))
    return {"random_pair_cosine_mean": float((base[pairs[0]] * base[pairs[1]]).sum(axis=1).mean()),
            "query_nn1_cosine_mean": float(gt_scores[:, 0].mean()),
            "query_nn10_cosine_mean": float(gt_scores[:, K - 1].mean())}


def _queries(backend: Any, queries: np.ndarray, gt: np.ndarray) -> dict[str, Any]:
    """Latency percentiles and recall@10 of one query per call, after a few untimed ones."""
    for vector in queries[:WARMUP_QUERIES]:
        backend.search(vector, K)
    latencies = np.empty(len(queries))
    hits = 0
    for row, vector in enumerate(queries):
        start = time.perf_counter()
        found = backend.search(vector, K)
        latencies[row] = time.perf_counter() - start
        hits += len({int(doc_id) for doc_id, _ in found} & set(gt[row].tolist()))
    return {**{f"p{q}_ms": float(np.percentile(latencies * 1000, q)) for q in (50, 99)},
            "recall_at_10": hits / (K * len(queries))}


def _dir_bytes(path: Path) -> int:
    """Bytes allocated on disk (sparse, preallocated files count only what they hold)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob("*") if f.is_file())


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this (fresh) process; returns its figures."""
    import faiss

    from inbedder_index.backends import make_qdrant_client, open_backend

    if spec["threads"]:
        faiss.omp_set_num_threads(spec["threads"])
    work, config, dim, n, batch = Path(spec["workdir"]), spec["config"], spec["dim"], spec["n"], spec["batch"]
    queries, gt = np.load(work / "queries.npy"), np.load(work / "gt_ids.npy")
    store = Path(tempfile.mkdtemp(prefix=f"{config}-", dir=work))
    if config.startswith("qdrant"):  # import costs are not index memory: pay them before the baseline
        importlib.import_module("qdrant_client.local.qdrant_local" if config == "qdrant-local" else "qdrant_edge")
    gc.collect()
    baseline = harness.rss_bytes() / MIB
    result: dict[str, Any] = {"config": config, "n": n, "dim": dim, "baseline_rss_mb": baseline,
                              "peak_reset_supported": harness.reset_peak()}  # else peaks include the imports
    client = None
    if config.startswith("qdrant"):
        client = make_qdrant_client(path=store / config, legacy_local=config == "qdrant-local",
                                    search_threads=spec["threads"])

    def open_(create: bool, ef_search: int = 128, exact: bool = False) -> Any:
        return open_backend("faiss" if client is None else "qdrant", directory=store, name="bench", dim=dim,
                            create=create, hnsw=config == "faiss-hnsw", hnsw_m=spec["m"],
                            ef_construction=spec["ef_construction"], ef_search=ef_search, qdrant_client=client,
                            exact=exact)

    cpu_start, start = time.process_time(), time.perf_counter()
    backend = open_(create=True)
    for row in range(0, n, batch):  # read from the raw file a batch at a time, never all in memory
        count = min(batch, n - row)
        vectors = np.fromfile(work / "base.f32", dtype=np.float32, count=count * dim, offset=row * dim * 4)
        backend.upsert([str(i) for i in range(row, row + count)], vectors.reshape(count, dim))
        if (row // batch + 1) % max(1, n // batch // 10) == 0:
            logger.info("%s: %d/%d vectors upserted in %.0f s", config, row + count, n, time.perf_counter() - start)
    backend.flush()
    result["build_s"] = time.perf_counter() - start
    assert backend.count() == n, (backend.count(), n)
    if config == "qdrant-edge":  # durable and searchable above; now the HNSW graph that close() would build
        start = time.perf_counter()
        backend.optimize()
        backend.flush()
        result["index_s"] = time.perf_counter() - start
    result["build_cpu_s"] = time.process_time() - cpu_start  # below build_s where the build waited for fsync
    result["peak_rss_build_mb"] = harness.peak_rss_bytes() / MIB
    logger.info("%s: built %d vectors in %.1f s (+%.1f s indexing; peak RSS %.0f MiB)", config, n,
                result["build_s"], result.get("index_s", 0.0), result["peak_rss_build_mb"])
    if config == "faiss-hnsw":  # searched from its file, reopened per efSearch
        backend.close()
        backend = None
        gc.collect()
    result["stored_bytes"] = _dir_bytes(store)
    if config == "qdrant-edge":
        shard = store / config / "bench"
        result.update(wal_bytes=_dir_bytes(shard / "wal"), segments_bytes=_dir_bytes(shard / "segments"))
    reopen = config in ("faiss-hnsw", "qdrant-edge")
    sweep = [(ef, False) for ef in spec["ef_search"]] if reopen else [(None, False)]
    result["runs"] = []
    for ef, exact in sweep + [(None, True)] * (config == "qdrant-edge"):
        harness.reset_peak()
        searcher = open_(create=False, ef_search=ef or 128, exact=exact) if reopen else backend
        run = {"ef_search": ef, "exact": exact, **_queries(searcher, queries, gt)}
        if config == "faiss-hnsw":
            searcher.close()
            del searcher
            gc.collect()
        run["peak_rss_search_mb"] = harness.peak_rss_bytes() / MIB
        logger.info("%s ef=%s: p50 %.3f ms, recall@10 %.4f", config, "exact" if exact else ef, run["p50_ms"],
                    run["recall_at_10"])
        result["runs"].append(run)
    for handle in (backend, client):
        if handle is not None:
            handle.close()
    shutil.rmtree(store, ignore_errors=True)
    result["peak_rss_mb"] = max([result["peak_rss_build_mb"]] + [r["peak_rss_search_mb"] for r in result["runs"]])
    result["peak_growth_build_mb"] = result["peak_rss_build_mb"] - baseline
    return result


def run_config(config: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """One configuration in a fresh process, its thread pools sized before it imports anything."""
    out = work / f"{config}.result.json"
    if out.exists():  # --workdir of an earlier run of the same settings: its figures stand
        logger.info("reusing %s", out)
        return json.loads(out.read_text())
    env = dict(os.environ)
    if spec["threads"]:  # OpenMP (FAISS, torch) and BLAS (NumPy) pools
        env.update(dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), str(spec["threads"])))
    logger.info("running %s in a fresh process", config)
    return harness.run_in_child("benchmarks.index_speed", dict(spec, config=config), out, env)


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
        for label, seconds in (("durable", edge["build_s"]), ("durable + HNSW", edge["build_s"] + edge["index_s"])):
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
    threads = settings["threads"] or "the libraries' own"
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
            f"threads: {threads}.", "",
            *harness.table(("configuration", "n", "efSearch", "build s", "+ index s", "build CPU s", "p50 ms", "p99 ms",
                            "recall@10", "disk MB", "peak RSS MB", "+ build MB", "+ search MB"), rows), "",
            f"Build s: upserts until durable; + index s: embedded Qdrant's HNSW build; disk: allocated bytes; raw "
            f"vectors {payload['raw_vector_mb']:.0f} MiB.", "",
            *(f"- {line}" for line in targets(payload["results"], payload["machine_busy"]))]


def plot(payload: dict[str, Any]) -> Any:
    settings = payload["settings"]
    fig, ax = harness.pyplot().subplots(figsize=(7.5, 5))
    for result in payload["results"]:
        color, marker, name, swept = STYLES[result["config"]]
        runs = [r for r in result["runs"] if not r.get("exact")]
        exact = [r for r in result["runs"] if r.get("exact")]
        line = "-" if swept else ""
        ax.plot([r["recall_at_10"] for r in runs], [r["p50_ms"] for r in runs], marker + line, color=color,
                label=f"{name} p50" + (f" ({swept} sweep)" if swept else ""))
        ax.plot([r["recall_at_10"] for r in runs], [r["p99_ms"] for r in runs], marker + 2 * line, color=color,
                alpha=0.45 if swept else 0.35, label=f"{name} p99")
        if exact:
            ax.plot([r["recall_at_10"] for r in exact], [r["p50_ms"] for r in exact], "v", color=color,
                    label=f"{name}, exact=True, p50")
        if result["config"] == "faiss-hnsw":
            for r in runs:
                ax.annotate(f"ef={r['ef_search']}", (r["recall_at_10"], r["p50_ms"]), textcoords="offset points",
                            xytext=(-10, 8), fontsize=8)
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
    parser.add_argument("--configs", default=",".join(LABELS),
                        help=f"comma-separated, of {', '.join(LABELS)} (default: all)")
    parser.add_argument("--workdir", default=None,
                        help="keep the data and each configuration's result here; a rerun reuses them")
    args = harness.parse(parser, argv)
    if harness.child_run(args, run_child):
        return 0
    configs = harness.names(args.configs)
    if not set(configs) <= set(LABELS):
        parser.error(f"--configs: unknown {', '.join(sorted(set(configs) - set(LABELS)))}")
    n = args.n or (5_000 if args.quick else 100_000)
    n_queries = args.queries or (200 if args.quick else 1_000)
    # with --workdir, the data and each configuration's result stay there for a rerun
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True, prefix="index_speed-") as scratch:
        work = Path(args.workdir or scratch)
        work.mkdir(parents=True, exist_ok=True)
        logger.info("generating %d + %d vectors of dim %d (%d clusters)", n, n_queries, args.dim, args.clusters)
        points = make_mixture(n + n_queries, args.dim, args.clusters, args.seed, alpha=args.spectrum_alpha)
        order = np.random.default_rng(args.seed + 2).permutation(len(points))
        base, queries = points[order[:n]], points[order[n:]]
        del points
        base.tofile(work / "base.f32")
        np.save(work / "queries.npy", queries)
        gt_ids, gt_scores = exact_top_k(base, queries, K)
        np.save(work / "gt_ids.npy", gt_ids)
        stats = data_stats(base, gt_scores, args.seed)
        del base
        sweep = [int(x) for x in harness.names(args.ef_search)]
        spec = {"workdir": str(work), "n": n, "dim": args.dim, "batch": args.batch, "m": args.m,
                "threads": args.threads, "ef_construction": args.ef_construction, "ef_search": sweep}
        results = [run_config(config, spec, work) for config in configs]
    info = harness.machine_info()
    from importlib.metadata import distributions

    info.update({dist.metadata["Name"]: dist.version for dist in distributions()
                 if dist.metadata["Name"] in ("faiss-cpu", "qdrant-client", "qdrant-edge-py")})
    payload = {"settings": {**harness.recorded(args), "n": n, "queries": n_queries, "k": K},
               "data": {"kind": "L2-normalised anisotropic Gaussian mixture (see make_mixture)", **stats},
               "raw_vector_mb": n * args.dim * 4 / MIB, "machine": info, "results": results,
               "machine_busy": harness.is_busy(info)}
    harness.finish(args, "index_speed", payload, summary, figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
