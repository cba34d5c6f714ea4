"""Encode and FAISS search with 1 and 2 threads, interleaved in one run (issue: thread defaults).

    python benchmarks/threads.py [--texts 64] [--rounds 5] [--vectors 100000]

Each round times one encode of the same texts and a fixed batch of FAISS flat queries under
each thread count in turn, so background load hits every setting alike; medians are reported.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from common import add_common_args, machine_info, mixed_texts, save_results, setup_logging, summarise, time_call

logger = logging.getLogger("benchmarks.threads")
SETTINGS = (1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    add_common_args(parser)
    args = parser.parse_args()
    setup_logging(args.verbose)

    import faiss

    from inbedder_index import InBedder
    from inbedder_index.threads import set_threads

    encoder = InBedder()
    texts = mixed_texts(args.texts, seed=1)
    instruction = "What is the topic of this text?"
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.vectors, encoder.dim), dtype=np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = faiss.IndexFlatIP(encoder.dim)
    index.add(data)
    queries = data[rng.choice(args.vectors, args.queries, replace=False)]

    timings: dict[str, dict[int, list[float]]] = {"encode": {n: [] for n in SETTINGS},
                                                  "faiss_search": {n: [] for n in SETTINGS}}
    encoder.encode(texts[:4], instruction)  # warm-up
    for round_ in range(args.rounds):
        for threads in SETTINGS:
            set_threads(threads)
            seconds, _ = time_call(lambda: encoder.encode(texts, instruction))
            timings["encode"][threads].append(seconds)
            seconds, _ = time_call(lambda: [index.search(q[None], 10) for q in queries])
            timings["faiss_search"][threads].append(seconds)
        logger.info("round %d done", round_ + 1)
    results = {
        task: {str(n): {**summarise(values), "per_item_ms": 1000 * float(np.median(values)) /
                        (len(texts) if task == "encode" else args.queries)}
               for n, values in by_threads.items()}
        for task, by_threads in timings.items()
    }
    payload = {"machine": machine_info(), "texts": len(texts), "vectors": args.vectors, "queries": args.queries,
               "rounds": args.rounds, "results": results}
    path = save_results("threads", payload)
    for task, by_threads in results.items():
        line = "  ".join(f"{n} thread(s): {r['per_item_ms']:.2f} ms/item" for n, r in by_threads.items())
        print(f"{task:13s} {line}")
    print(f"saved {path}")


if __name__ == "__main__":
    main()
