"""Latency of ``search_combined`` over 2 and 4 instructions against as many single searches.

The index holds synthetic vectors of a tiny model's width (a Gaussian mixture per instruction),
written through the library's build path; the model only embeds text queries. Timed interleaved,
by vector and by text, with recall@k of the combined search against NumPy's exact ranking.

    python -m benchmarks.combined_search --quick                 # 2,000 documents, 20 queries
    python -m benchmarks.combined_search --backend qdrant        # embedded Qdrant instead of FAISS
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .build_memory import make_tiny_model
from .index_speed import exact_top_k
from .texts import INSTRUCTIONS, news_texts

logger = logging.getLogger("benchmarks.combined_search")

COUNTS = (2, 4)
ANSWERS = np.array(["positive", "negative", "neutral", "sports", "business", "world", "science", "Paris", "Tokyo"])
WRITE_CHUNK = 10_000


def build(index: Any, n: int, dim: int, held_out: int,
          rng: np.random.Generator) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Store ``n`` documents with synthetic vectors (unit vectors around random centres) and answers
    under every instruction; returns the stored vectors and ``held_out`` query vectors per instruction."""
    vectors: dict[str, np.ndarray] = {}
    queries: dict[str, np.ndarray] = {}
    labels: dict[str, np.ndarray] = {}
    for instruction in INSTRUCTIONS:
        centres = rng.standard_normal((max(8, n // 500), dim)).astype(np.float32)
        label = rng.integers(0, len(centres), n + held_out)
        points = centres[label] + 0.8 * rng.standard_normal((n + held_out, dim)).astype(np.float32)
        points /= np.linalg.norm(points, axis=1, keepdims=True)
        vectors[instruction], queries[instruction], labels[instruction] = points[:n], points[n:], label[:n]
    index.register_instructions(INSTRUCTIONS)
    sync = index.sync_state()
    for start in range(0, n, WRITE_CHUNK):
        stop = min(start + WRITE_CHUNK, n)
        index.store_documents([{"id": f"doc-{i:07d}", "text": f"Synthetic document {i}.", "metadata": {"part": i % 10}}
                               for i in range(start, stop)])
        stored = index.get([f"doc-{i:07d}" for i in range(start, stop)])
        pending: dict[str, dict[str, str]] = {instruction: {} for instruction in INSTRUCTIONS}
        for instruction in INSTRUCTIONS:
            answers = ANSWERS[labels[instruction][start:stop] % len(ANSWERS)].tolist()
            sync.store(instruction, stored, vectors[instruction][start:stop], answers, pending)
        sync.checkpoint(pending)
        logger.info("stored %d / %d documents", stop, n)
    return vectors, queries


def recall(index: Any, vectors: dict[str, np.ndarray], queries: dict[str, np.ndarray], instructions: Sequence[str],
           k: int, samples: int) -> float:
    """Mean overlap of the combined top k with the exact top k of the summed scores (the instructions'
    vectors side by side: one product)."""
    exact, _ = exact_top_k(np.hstack([vectors[i] for i in instructions]),
                           np.hstack([queries[i][:samples] for i in instructions]), k)
    hits = [len({f"doc-{j:07d}" for j in ids} & {h.id for h in index.search_combined_by_vectors(
        {i: queries[i][q] for i in instructions}, k=k)}) for q, ids in enumerate(exact)]
    return float(np.mean(hits)) / k


def time_pair(combined: Callable[[int], Any], singles: Callable[[int], Any], rounds: int) -> dict[str, Any]:
    """Interleaved timings of one combined call and the equivalent single calls, per query."""
    times: dict[str, list[float]] = {"combined": [], "singles": []}
    for q in range(rounds):
        for side, call in (("combined", combined), ("singles", singles)):
            times[side].append(harness.time_call(lambda: call(q))[0])
    measured: dict[str, Any] = {side: {"median_ms": 1000 * statistics.median(values),
                                       "p90_ms": 1000 * float(np.percentile(values, 90))}
                                for side, values in times.items()}
    measured["ratio"] = measured["combined"]["median_ms"] / measured["singles"]["median_ms"]
    return measured


def run(args: Any) -> dict[str, Any]:
    """Write the index, then time and score each instruction count; the result's figures."""
    from inbedder_index import InBedder, InstructionIndex
    from inbedder_index.threads import set_threads

    set_threads(args.threads)
    model, tokenizer = make_tiny_model(args.hidden, args.seed)
    encoder = InBedder.from_model(model, tokenizer, model_id=f"tiny-llama-h{args.hidden}", device="cpu",
                                  max_length=128)
    texts = news_texts(args.queries + 5, seed=args.seed + 7)
    k, results = args.k, {}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True, prefix="combined_search-") as work, \
            InstructionIndex.open(Path(work) / "index", model=encoder, backend=args.backend) as index:
        started = time.perf_counter()
        vectors, queries = build(index, args.docs, encoder.dim, args.queries + 5, np.random.default_rng(args.seed))
        build_s = time.perf_counter() - started
        for n in COUNTS:
            asked = INSTRUCTIONS[:n]
            for q in range(5):  # warm-up: caches, FAISS threads, the model's first calls
                index.search_combined({i: texts[-1 - q] for i in asked}, k=k)
                index.search_combined_by_vectors({i: queries[i][q] for i in asked}, k=k)
            results[str(n)] = {
                "by_vector": time_pair(
                    lambda q: index.search_combined_by_vectors({i: queries[i][q] for i in asked}, k=k),
                    lambda q: [index.search_by_vector(queries[i][q], i, k=k) for i in asked], args.queries),
                "by_text": time_pair(lambda q: index.search_combined({i: texts[q] for i in asked}, k=k),
                                     lambda q: [index.search(texts[q], i, k=k) for i in asked], args.queries),
                "recall_at_k": recall(index, vectors, queries, asked, k, min(args.queries, 20)),
            }
            logger.info("%d instructions: %s", n, results[str(n)])
    return {"build_s": build_s, "dim": encoder.dim, "results": results}


def summary(payload: dict[str, Any]) -> list[str]:
    settings = payload["settings"]
    rows = []
    for n, result in payload["results"].items():
        for kind in ("by_vector", "by_text"):
            timing = result[kind]
            rows.append((n, kind.replace("_", " "), f"{timing['combined']['median_ms']:.2f}",
                         f"{timing['combined']['p90_ms']:.2f}", f"{timing['singles']['median_ms']:.2f}",
                         f"{timing['singles']['p90_ms']:.2f}", f"{timing['ratio']:.2f}", f"{result['recall_at_k']:.3f}"))
    return [f"{settings['docs']:,} documents, vectors of dim {payload['dim']} (a tiny Llama's width), backend "
            f"{settings['backend']}, k={settings['k']}, {settings['queries']} queries per cell, {settings['threads']} "
            f"thread(s); the index was written in {payload['build_s']:.1f} s.", "",
            *harness.table(("instructions", "query", "combined median ms", "combined p90 ms", "n singles median ms",
                            "n singles p90 ms", "combined / singles", f"recall@{settings['k']} vs exact"), rows), "",
            "By text, both sides embed the query once per instruction (the prompt holds the instruction), the combined "
            "search in one encode call. Recall: the combined top k against NumPy's exact weighted sum over the same "
            "vectors."]


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--docs", type=int, default=None, help="documents (default 100,000; --quick: 2,000)")
    parser.add_argument("--queries", type=int, default=None, help="timed queries per cell (default 100; --quick: 20)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model's hidden size = vector dim (default 64)")
    parser.add_argument("--backend", choices=("faiss", "qdrant"), default="faiss")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of the model and FAISS (default 1)")
    args = harness.parse(parser, argv)
    args.docs = args.docs or (2000 if args.quick else 100_000)
    args.queries = args.queries or (20 if args.quick else 100)
    harness.finish(args, "combined_search", {**run(args), "settings": harness.recorded(args)}, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
