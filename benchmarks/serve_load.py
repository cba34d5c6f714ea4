"""``inbedder-index serve`` under load: 1, 8 and 32 concurrent clients, each sending single short
texts to ``/v1/embeddings``, against in-process batched ``InBedder.encode`` of the same texts in the
same run.

The server runs in its own process as a user runs it; httpx clients send one text per request.
Reported per level: texts/s, p50/p99, failures, the server's mean batch and peak memory, and the
cosine to in-process vectors; a ``--runtime torch`` server's peak memory beside it. Targets: 32
clients >= 70 % of in-process throughput with no failure; peak memory at most half the PyTorch
server's.

    python -m benchmarks.serve_load --quick     # 48 requests per level
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .texts import news_texts

logger = logging.getLogger("benchmarks.serve_load")

INSTRUCTION = "What is the topic of this text?"
LEVELS = (1, 8, 32)
TARGET_FRACTION = 0.70
MEMORY_TARGET = 0.5  # the default server's peak memory / a --runtime torch server's


def baseline(encoder: Any, texts: list[str]) -> float:
    """Texts per second of in-process batched ``encode`` (after a warm-up batch)."""
    encoder.encode(texts[:32], INSTRUCTION, batch_size=32, show_progress_bar=False)
    seconds, _ = harness.time_call(lambda: encoder.encode(texts, INSTRUCTION, batch_size=32, show_progress_bar=False))
    return len(texts) / seconds


def serve_peak(model: str, threads: int, texts: list[str], levels: Sequence[int],
               *options: str) -> tuple[list[dict[str, Any]], int | None]:
    """Each level's load on a fresh server, started as a user starts it, and the server's peak memory."""
    command = [sys.executable, "-m", "inbedder_index.cli", "--threads", str(threads), "serve", "--model", model,
               "--port", "0", *options]
    deadline = time.monotonic() + 600
    with tempfile.NamedTemporaryFile(prefix="serve_load-", suffix=".log") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        log = Path(stderr.name)
        try:
            while not (started := re.search(r" on (http://\S+);", log.read_text())):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the server exited or took over 600 s: {log.read_text()[-2000:]}")
                time.sleep(0.2)
            results = [asyncio.run(load(started.group(1), texts, clients)) for clients in levels]
            return results, harness.peak_rss_of(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)


def batch_counts(metrics: str) -> tuple[float, float]:
    """(requests gathered, batches formed) so far, from the server's /metrics."""
    found = dict(re.findall(r"^inbedder_batch_requests_(sum|count) (\S+)$", metrics, flags=re.M))
    return float(found.get("sum", 0)), float(found.get("count", 0))


async def load(url: str, texts: list[str], clients: int) -> dict[str, Any]:
    """``clients`` concurrent clients sending ``texts`` one per request, after a warm-up request each."""
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
        await asyncio.gather(*(one(http, i % len(texts)) for i in range(clients)))  # connections, first batches
        latencies.clear()
        failures.clear()
        before = batch_counts((await http.get("/metrics")).text)
        start = time.perf_counter()
        await asyncio.gather(*(client(http, range(c, len(texts), clients)) for c in range(clients)))
        wall = time.perf_counter() - start
        after = batch_counts((await http.get("/metrics")).text)
    batches = after[1] - before[1]
    logger.info("%d clients: %.1f texts/s, %d failed", clients, len(texts) / wall, len(failures))
    p50, p99 = 1000 * np.percentile(latencies, [50, 99]) if latencies else (None, None)
    return {"clients": clients, "requests": len(texts), "seconds": wall, "texts_per_s": len(texts) / wall,
            "p50_ms": p50, "p99_ms": p99, "failed": len(failures), "failures": failures[:5],
            "mean_batch_requests": (after[0] - before[0]) / batches if batches else None, "vectors": vectors}


def plot(result: dict[str, Any]) -> Any:
    levels, base = result["levels"], result["baseline_texts_per_s"]
    x = [level["clients"] for level in levels]
    fig, (left, right) = harness.pyplot().subplots(1, 2, figsize=(10, 4))
    left.bar_label(left.bar([str(c) for c in x], [level["texts_per_s"] for level in levels], color="#3366cc"),
                   fmt="%.1f")
    left.axhline(base, color="black", linestyle="--", linewidth=1, label="in-process batched encode")
    left.axhline(TARGET_FRACTION * base, color="red", linestyle=":", linewidth=1,
                 label=f"target: {TARGET_FRACTION:.0%} of it")
    left.set(xlabel="concurrent clients", ylabel="texts / s", title="throughput")
    left.legend(fontsize=8)
    for quantile in ("p50", "p99"):
        right.plot(x, [level[f"{quantile}_ms"] for level in levels], marker="o", label=quantile)
    right.set_xscale("log", base=2)
    right.set_xticks(x, [str(c) for c in x])
    right.set(xlabel="concurrent clients", ylabel="latency (ms)", title="latency per request")
    right.legend()
    fig.suptitle(f"inbedder-index serve, {result['model']}, single short texts")
    return fig


def summary(result: dict[str, Any]) -> list[str]:
    base, top, info = result["baseline_texts_per_s"], result["levels"][-1], result["machine"]
    rows = [(level["clients"], f"{level['texts_per_s']:.2f}", f"{level['texts_per_s'] / base:.0%}",
             f"{level['p50_ms']:.0f}", f"{level['p99_ms']:.0f}", level["failed"],
             f"{level['mean_batch_requests'] or 0:.1f}", f"{level['min_cosine_vs_in_process'] or 0:.6f}")
            for level in result["levels"]]
    before, after = result["baseline_before_after"]
    peak, torch_peak = result["server_peak_rss_mib"], result["torch_server_peak_rss_mib"]
    lines = [f"`{result['model']}`, {result['requests_per_level']} single-text requests per level "
            f"(~{result['mean_words']:.0f} words), {result['threads']} thread(s) for the server and the baseline; "
            f"load average {info['load_average_1m_end']:.1f} at the end. "
            f"In-process batched encode: {base:.2f} texts/s (before {before:.2f}, after {after:.2f}).", "",
            *harness.table(("clients", "texts/s", "of in-process", "p50 ms", "p99 ms", "failed", "mean batch",
                            "min cosine to in-process"), rows), "",
            f"- server peak memory {peak or 0:,.0f} MiB; the benchmark's process (model and clients) "
            f"{result['benchmark_peak_rss_mib']:,.0f} MiB",
            f"- target: {top['clients']} clients >= {result['target_fraction']:.0%} of in-process throughput, none "
            f"failed: {result['fraction_at_32']:.0%}, {top['failed']} failed, {harness.verdict(result['met'])}"]
    if peak and torch_peak:  # None where /proc could not say
        ratio = peak / torch_peak
        over = "" if ratio <= MEMORY_TARGET else f" (over by {ratio - MEMORY_TARGET:.0%} of the PyTorch server's)"
        lines.append(f"- target: server peak memory <= {MEMORY_TARGET:.0%} of a `--runtime torch` server's: "
                     f"{peak:,.0f} MiB vs {torch_peak:,.0f} MiB = {ratio:.0%}, "
                     f"{harness.verdict(ratio <= MEMORY_TARGET)}{over}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default=None, help="model to serve (default: the default model)")
    parser.add_argument("--requests", type=int, default=None, help="requests per level (default 256; --quick: 48)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of the server and of the in-process baseline alike (default: the CLI's)")
    args = harness.parse(parser, argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    from inbedder_index import DEFAULT_MODEL, InBedder
    from inbedder_index.threads import default_threads, set_threads

    model = args.model or DEFAULT_MODEL
    threads = args.threads or default_threads()
    set_threads(threads)  # the baseline runs with the threads the server gets
    texts = news_texts(args.requests or (48 if args.quick else 256), seed=args.seed, words=(8, 20))
    encoder = InBedder(model)
    before = baseline(encoder, texts)
    logger.info("in-process batched encode: %.1f texts/s", before)
    levels, server_peak = serve_peak(model, threads, texts, LEVELS)
    _, torch_peak = serve_peak(model, threads, texts, LEVELS[:1], "--runtime", "torch")
    after = baseline(encoder, texts)
    reference = encoder.encode(texts, INSTRUCTION, show_progress_bar=False)
    for level in levels:
        served = level.pop("vectors")
        rows = sorted(served)
        level["min_cosine_vs_in_process"] = float(harness.cosine_rows(
            np.stack([served[r] for r in rows]), reference[rows]).min()) if rows else None
    base = (before + after) / 2
    top = levels[-1]
    result = {"model": model, "instruction": INSTRUCTION, "requests_per_level": len(texts), "threads": threads,
              "mean_words": statistics.mean(len(t.split()) for t in texts),
              "baseline_texts_per_s": base, "baseline_before_after": [before, after], "levels": levels,
              "server_peak_rss_mib": server_peak / harness.MIB if server_peak else None,
              "torch_server_peak_rss_mib": torch_peak / harness.MIB if torch_peak else None,
              "benchmark_peak_rss_mib": harness.peak_rss_bytes() / harness.MIB, "target_fraction": TARGET_FRACTION,
              "fraction_at_32": top["texts_per_s"] / base,
              "met": top["texts_per_s"] >= TARGET_FRACTION * base and top["failed"] == 0}
    harness.finish(args, "serve_load", result, summary, figure=plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
