"""Encode and FAISS search with 1 and 2 threads, interleaved in one run (the thread defaults).

Each round times one encode of the same texts and a fixed batch of FAISS flat queries under
each thread count in turn, so background load hits every setting alike; medians are reported.

    python -m benchmarks.threads [--texts 64] [--rounds 5] [--vectors 100000]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import harness
from .texts import INSTRUCTIONS, mixed_texts

logger = logging.getLogger("benchmarks.threads")
SETTINGS = (1, 2)


def summary(payload: dict[str, Any]) -> list[str]:
    results = payload["results"]
    counts = list(next(iter(results.values())))
    return [f"{payload['texts']} mixed texts encoded with the default model; {payload['queries']} FAISS flat "
            f"queries over {payload['vectors']:,} vectors; medians of {payload['rounds']} interleaved rounds.", "",
            *harness.table(("task", *(f"{n} thread(s), ms per item" for n in counts)),
                           [(task, *(f"{by_threads[n]['per_item_ms']:.2f}" for n in counts))
                            for task, by_threads in results.items()])]


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = harness.parse(parser, argv)
    if args.quick:
        args.texts, args.rounds, args.vectors, args.queries = 8, 1, 5_000, 20
    import faiss

    from inbedder_index import InBedder
    from inbedder_index.threads import set_threads

    encoders = {}
    for threads in SETTINGS:  # ONNX Runtime (the default on a CPU) fixes its threads when a model's session opens
        set_threads(threads)
        encoders[threads] = InBedder()
    dim = encoders[SETTINGS[0]].dim
    texts = mixed_texts(args.texts, seed=1)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.vectors, dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(dim)
    index.add(data)
    queries = data[rng.choice(args.vectors, args.queries, replace=False)]
    tasks = {"encode": (len(texts), lambda threads: encoders[threads].encode(texts, INSTRUCTIONS[0])),
             "faiss_search": (args.queries, lambda threads: [index.search(q[None], 10) for q in queries])}
    timings: dict[str, dict[int, list[float]]] = {task: {n: [] for n in SETTINGS} for task in tasks}
    for warm in encoders.values():
        warm.encode(texts[:4], INSTRUCTIONS[0])
    for round_ in range(args.rounds):
        for threads in SETTINGS:
            set_threads(threads)
            for task, (_, call) in tasks.items():
                timings[task][threads].append(harness.time_call(lambda: call(threads))[0])
        logger.info("round %d done", round_ + 1)
    results = {task: {str(n): {**harness.summarise(values),
                               "per_item_ms": 1000 * float(np.median(values)) / tasks[task][0]}
                      for n, values in by_threads.items()}
               for task, by_threads in timings.items()}
    payload = {"texts": len(texts), "vectors": args.vectors,
               "queries": args.queries, "rounds": args.rounds, "results": results}
    harness.finish(args, "threads", payload, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
