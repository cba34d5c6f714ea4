"""``inbedder-index serve`` under load: 1, 8 and 32 concurrent clients, each sending single short
texts to ``/v1/embeddings``, against in-process batched ``InBedder.encode`` of the same texts in the
same run.

1. In-process baseline: the model is loaded here and ``encode(texts, instruction, batch_size=32)``
   is timed on all ``--requests`` texts (after a warm-up batch), before and after the load
   runs; the baseline is their mean.
2. The server: ``inbedder-index serve --model MODEL --port 0`` in its own process, as a user
   runs it (dynamic batching on, its defaults).
3. For each concurrency C: C asyncio clients (httpx, one connection each) share the
   ``--requests`` texts, each sending one text per request (base64, as the openai client
   does) until all are sent; a warm-up of C requests comes first. Reported: throughput
   (texts/s), p50/p99 latency, failed requests, the mean batch the server formed (from its
   /metrics) and the server's peak memory (VmHWM).
4. A sample of the served vectors is compared with the in-process ones (cosine).

Target (printed as MET / NOT MET): with 32 clients, throughput >= 70 % of the in-process
baseline and no failed request. Client and server share the machine's cores, as they would
on one host; the server and the baseline use the same CPU threads (``--threads``, default the
CLI's: one on a machine with at most two cores).

    python benchmarks/serve_load.py --quick     # 48 requests per level
    python benchmarks/serve_load.py             # 256 requests per level

Results: ``benchmarks/results/serve_load.json`` and ``serve_load.png`` (``serve_load_quick.*``).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common import (
    RESULTS_DIR,
    benchmark_parser,
    cosine_rows,
    machine_info,
    news_texts,
    peak_rss_bytes,
    peak_rss_of,
    save_figure,
    save_results,
    setup_logging,
)

logger = logging.getLogger("benchmarks.serve_load")

INSTRUCTION = "What is the topic of this text?"
LEVELS = (1, 8, 32)
TARGET_FRACTION = 0.70


def baseline(encoder: Any, texts: list[str]) -> float:
    """Texts per second of in-process batched ``encode`` (after a warm-up batch)."""
    encoder.encode(texts[:32], INSTRUCTION, batch_size=32, show_progress_bar=False)
    start = time.perf_counter()
    encoder.encode(texts, INSTRUCTION, batch_size=32, show_progress_bar=False)
    return len(texts) / (time.perf_counter() - start)


def start_server(model: str, threads: int | None, log: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "inbedder_index.cli", *(["--threads", str(threads)] if threads else []),
               "serve", "--model", model, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        match = re.search(r" on (http://\S+);", log.read_text())
        if match:
            return process, match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited: {log.read_text()[-2000:]}")
        time.sleep(0.2)
    process.kill()
    raise RuntimeError("the server did not start within 600 s")


def batch_counts(metrics: str) -> tuple[float, float]:
    """(requests gathered, batches formed) so far, from the server's /metrics."""
    found = dict(re.findall(r"^inbedder_batch_requests_(sum|count) (\S+)$", metrics, flags=re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


async def load(url: str, texts: list[str], clients: int) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    failures: list[str] = []
    vectors: dict[int, np.ndarray] = {}

    async def one(http: Any, position: int) -> None:
        start = time.perf_counter()
        try:
            response = await http.post("/v1/embeddings", json={"input": texts[position], "instruction": INSTRUCTION,
                                                               "encoding_format": "base64"})
        except httpx.HTTPError as error:
            failures.append(f"{type(error).__name__}: {error}")
            return
        latencies.append(time.perf_counter() - start)
        if response.status_code != 200:
            failures.append(f"{response.status_code}: {response.text[:200]}")
            return
        vectors[position] = np.frombuffer(base64.b64decode(response.json()["data"][0]["embedding"]), dtype="<f4")

    async def client(http: Any, positions: range) -> None:
        for position in positions:
            await one(http, position)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
        await asyncio.gather(*(one(http, i % len(texts)) for i in range(clients)))  # warm-up: connections, batches
        latencies.clear()
        failures.clear()
        before = batch_counts((await http.get("/metrics")).text)
        start = time.perf_counter()
        await asyncio.gather(*(client(http, range(c, len(texts), clients)) for c in range(clients)))
        wall = time.perf_counter() - start
        after = batch_counts((await http.get("/metrics")).text)
    gathered, batches = after[0] - before[0], after[1] - before[1]
    return {
        "clients": clients, "requests": len(texts), "seconds": wall, "texts_per_s": len(texts) / wall,
        "p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else None,
        "failed": len(failures), "failures": failures[:5], "mean_batch_requests": gathered / batches if batches else None,
        "vectors": vectors,
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars = left.bar(range(len(levels)), [level["texts_per_s"] for level in levels], color="#3366cc")
    left.set_xticks(range(len(levels)), [str(level["clients"]) for level in levels])
    left.bar_label(bars, fmt="%.1f")
    left.axhline(result["baseline_texts_per_s"], color="black", linestyle="--", linewidth=1,
                 label="in-process batched encode")
    left.axhline(TARGET_FRACTION * result["baseline_texts_per_s"], color="red", linestyle=":", linewidth=1,
                 label=f"target: {TARGET_FRACTION:.0%} of it")
    left.set_xlabel("concurrent clients")
    left.set_ylabel("texts / s")
    left.set_title("throughput")
    left.legend(fontsize=8)
    x = [level["clients"] for level in levels]
    right.plot(x, [level["p50_ms"] for level in levels], marker="o", label="p50")
    right.plot(x, [level["p99_ms"] for level in levels], marker="o", label="p99")
    right.set_xscale("log", base=2)
    right.set_xticks(x, [str(v) for v in x])
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency (ms)")
    right.set_title("latency per request")
    right.legend()
    fig.suptitle(f"inbedder-index serve, {result['model']}, single short texts")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--model", default=None, help="model to serve (default: the default model)")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default 256; --quick: 48)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the server and of the in-process baseline alike (default: the CLI's)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from inbedder_index import DEFAULT_MODEL, InBedder
    from inbedder_index.threads import default_threads, set_threads

    model = args.model or DEFAULT_MODEL
    threads = args.threads or default_threads()
    set_threads(threads)  # the baseline runs with the threads the server gets
    texts = news_texts(args.requests or (48 if args.quick else 256), seed=args.seed, words=(8, 20))
    name = "serve_load_quick" if args.quick else "serve_load"
    load_start = os.getloadavg()[0]
    encoder = InBedder(model)
    before = baseline(encoder, texts)
    logger.info("in-process batched encode: %.1f texts/s", before)
    log = Path(tempfile.mkstemp(prefix="serve_load-", suffix=".log")[1])
    process, url = start_server(model, threads, log)
    try:
        levels = []
        for clients in LEVELS:
            level = asyncio.run(load(url, texts, clients))
            logger.info("%d clients: %.1f texts/s, p99 %.0f ms, %d failed", clients, level["texts_per_s"],
                        level["p99_ms"] or 0, level["failed"])
            levels.append(level)
        server_peak = peak_rss_of(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.unlink(missing_ok=True)
    after = baseline(encoder, texts)
    reference = encoder.encode(texts, INSTRUCTION, show_progress_bar=False)
    for level in levels:
        served = level.pop("vectors")
        rows = sorted(served)
        level["min_cosine_vs_in_process"] = float(cosine_rows(np.stack([served[r] for r in rows]),
                                                              reference[rows]).min()) if rows else None
    base = (before + after) / 2
    top = levels[-1]
    met = top["texts_per_s"] >= TARGET_FRACTION * base and top["failed"] == 0
    info = machine_info("cpu")
    info["load_average_1m_start"] = load_start
    info["load_average_1m_end"] = os.getloadavg()[0]
    result = {"model": model, "instruction": INSTRUCTION, "requests_per_level": len(texts), "threads": threads,
              "mean_words": statistics.mean(len(t.split()) for t in texts),
              "baseline_texts_per_s": base, "baseline_before_after": [before, after], "levels": levels,
              "server_peak_rss_mib": server_peak / 2**20 if server_peak else None,
              "benchmark_peak_rss_mib": peak_rss_bytes() / 2**20, "target_fraction": TARGET_FRACTION,
              "fraction_at_32": top["texts_per_s"] / base, "met": met, "machine": info}

    print(f"\nserve_load ({'quick' if args.quick else 'full'}): {model}, {len(texts)} single-text requests per level "
          f"(~{result['mean_words']:.0f} words); {info['cpu_model']}, {info['usable_cores']} cores, "
          f"load {load_start:.1f} at start, {info['load_average_1m_end']:.1f} at end")
    print(f"in-process batched encode (batch 32, {info['torch_threads']} thread(s) like the server): {base:.1f} "
          f"texts/s (before {before:.1f}, after {after:.1f})")
    print(f"{'clients':>7} {'texts/s':>8} {'vs in-process':>13} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} "
          f"{'mean batch':>10} {'min cosine':>10}")
    for level in levels:
        print(f"{level['clients']:>7} {level['texts_per_s']:>8.1f} {level['texts_per_s'] / base:>12.0%} "
              f"{level['p50_ms']:>7.0f} {level['p99_ms']:>7.0f} {level['failed']:>6} "
              f"{level['mean_batch_requests'] or 0:>10.1f} {level['min_cosine_vs_in_process'] or 0:>10.6f}")
    print(f"server peak memory {result['server_peak_rss_mib'] or 0:.0f} MiB; this process (model + clients) "
          f"{result['benchmark_peak_rss_mib']:.0f} MiB")
    print(f"32 clients: {result['fraction_at_32']:.0%} of in-process throughput, {top['failed']} failed; "
          f"target >= {TARGET_FRACTION:.0%} and none failed: {'MET' if met else 'NOT MET'}")
    if not args.no_save:
        save_results(name, result)
        plot(result, RESULTS_DIR / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
