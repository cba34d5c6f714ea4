"""Distributed build throughput: 1 and 2 Ray encoder actors against plain ``encode`` in one process.

Each configuration in a fresh process: ``plain-Tt`` (one ``encode`` call, T threads: every core,
and 1) and ``ray-K`` (``distributed.build`` with K one-CPU actors, ``ray.init`` included). From the
build's ``BuildReport``: start-up, steady documents/s (after every actor's first block), end to
end, each actor's encode rate and the driver's; peak memory of the process and of its process
tree. Target: steady(ray-2) >= 0.8 x plain with every core.

    python -m benchmarks.ray_build --quick     # tiny random model, 64 documents
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import harness
from .harness import MIB
from .texts import INSTRUCTIONS, news_texts

logger = logging.getLogger("benchmarks.ray_build")

TARGET = 0.8  # ray-2's steady documents/s over plain encode's with every core


class TreeMemory(threading.Thread):
    """The largest sum of RSS over this process and its descendants (Ray's workers), sampled every
    0.25 s, and the CPU seconds of the descendants that this process does not wait for (Ray's), which
    the operating system would otherwise count as other processes' work."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0
        self.cpu: dict[int, float] = {}  # per descendant: its CPU seconds when last seen
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        import psutil

        root = psutil.Process()
        while True:  # a first sample at once: a short run still gets one
            total = 0
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # exited meanwhile
                    total += process.memory_info().rss
                    if process.pid != root.pid:
                        self.cpu[process.pid] = sum(process.cpu_times()[:2])  # user + system
            self.peak = max(self.peak, total)
            if self.done.wait(0.25):
                return

    def stop(self) -> tuple[int, float]:
        """The peak, and the descendants' CPU seconds less those of the ones this process waited for."""
        self.done.set()
        self.join()
        waited = os.times()
        return self.peak, max(0.0, sum(self.cpu.values()) - waited.children_user - waited.children_system)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, in this fresh process."""
    from inbedder_index import InBedder, InstructionIndex
    from inbedder_index.threads import set_threads

    logging.getLogger("inbedder_index").setLevel(logging.WARNING)  # Ray's own logs and bars stay quiet too
    logger.info("%s: fresh process", spec["config"])
    memory = TreeMemory()
    n, texts = spec["n"], news_texts(spec["n"], seed=spec["seed"])
    instructions = INSTRUCTIONS[: spec["instructions"]]
    result: dict[str, Any] = {"config": spec["config"], "n": n}
    if "threads" in spec:
        set_threads(spec["threads"])
        encoder = InBedder(spec["model"])
        encoder.encode(texts[:4], instructions)
        seconds, _ = harness.time_call(lambda: encoder.encode(texts, instructions))
        result.update(threads=spec["threads"], seconds=seconds, docs_per_s=n / seconds)
    else:
        from inbedder_index import distributed

        set_threads(1)  # the driver only reads, upserts and records
        with InstructionIndex.open(Path(spec["workdir"]) / spec["config"], model=InBedder(spec["model"])) as index:
            index.store_documents([{"id": f"d{i:06d}", "text": text} for i, text in enumerate(texts)])
            report = distributed.build(index, instructions, num_actors=spec["actors"], cpus_per_actor=1,
                                       batch_size=spec["block"], show_progress_bar=False)
            counts = [c["count"] for c in index.stats()["collections"]]
        assert counts == [n] * len(instructions), counts
        result.update(actors=report.actors, seconds=report.seconds, connect_s=report.connect_seconds,
                      first_block_s=report.first_block_seconds, docs_per_s=report.steady_docs_per_second,
                      end_to_end_docs_per_s=n / report.seconds, driver_seconds=report.driver_seconds,
                      actor_encode_docs_per_s=n / (report.worker_seconds / report.actors),
                      driver_docs_per_s=n / report.driver_seconds)
    tree_peak, unwaited_cpu_s = memory.stop()
    return {**result, "peak_rss_bytes": harness.peak_rss_bytes(), "tree_peak_rss_bytes": tree_peak,
            "unwaited_cpu_s": unwaited_cpu_s}


def summary(payload: dict[str, Any]) -> list[str]:
    settings = payload["settings"]
    plain, plain_1t, ray_1, ray_2 = payload["results"]
    steady = ray_2["docs_per_s"] / plain["docs_per_s"]
    rows = []
    for r in payload["results"]:
        ray_run = "actors" in r
        rows.append((r["config"], f"{r['docs_per_s']:.2f}", f"{r['docs_per_s'] / plain['docs_per_s']:.2f}x",
                     *((f"{r['end_to_end_docs_per_s']:.2f}", f"{r['connect_s']:.1f} + {r['first_block_s']:.1f}",
                        f"{r['actor_encode_docs_per_s']:.2f}") if ray_run else ("", "", "")),
                     f"{r['peak_rss_bytes'] / MIB:,.0f} / {r['tree_peak_rss_bytes'] / MIB:,.0f}"))
    return [f"{settings['n']} documents x {settings['instructions']} instructions, model "
            f"`{Path(settings['model']).name}`, blocks of {settings['block']}, FAISS; each configuration in a fresh "
            "process.", "",
            *harness.table(("configuration", "documents/s", "vs plain", "end to end", "start-up s (ray.init + first "
                            "block)", "actor encode docs/s", "peak RSS MB: process / with Ray's"), rows), "",
            "Plain: N / one encode call; Ray: steady state, after every actor's first block.", "",
            f"- target: 2 actors steady >= {TARGET}x plain ({plain['config']}): {steady:.2f}x, "
            f"{harness.verdict(steady >= TARGET, payload['quick'])}; end to end, start-up included: "
            f"{ray_2['end_to_end_docs_per_s'] / plain['docs_per_s']:.2f}x; against the faster plain run: "
            f"{ray_2['docs_per_s'] / max(plain['docs_per_s'], plain_1t['docs_per_s']):.2f}x",
            f"- one actor / one thread in one process: {ray_1['docs_per_s'] / plain_1t['docs_per_s']:.2f}x; "
            f"2 actors / (2 x 1 actor): {ray_2['docs_per_s'] / (2 * ray_1['docs_per_s']):.2f} (1.00 = linear)",
            f"- the driver needed {ray_2['driver_seconds']:.2f} s to store and record the documents (ray-2): "
            f"{ray_2['driver_docs_per_s']:.0f} documents/s, the work of "
            f"{ray_2['driver_docs_per_s'] / ray_1['docs_per_s']:.0f} actors of ray-1's speed"]


def plot(payload: dict[str, Any]) -> Any:
    results = payload["results"]
    fig, (speed, memory) = harness.pyplot().subplots(1, 2, figsize=(11, 4.5))
    names = [r["config"] for r in results]
    speed.bar(names, [r["docs_per_s"] for r in results], color=["C0" if "actors" not in r else "C1" for r in results],
              label="steady (ray) / one call (plain)")
    ray_runs = [(i, r) for i, r in enumerate(results) if "actors" in r]
    speed.scatter([i for i, _ in ray_runs], [r["end_to_end_docs_per_s"] for _, r in ray_runs], color="k", zorder=3,
                  label="ray end to end (start-up included)")
    speed.set_ylabel("documents / s")
    memory.bar(names, [r["tree_peak_rss_bytes"] / MIB for r in results], color="C2", label="process tree")
    memory.bar(names, [r["peak_rss_bytes"] / MIB for r in results], color="C4", label="this process")
    memory.set_ylabel("peak RSS, MiB")
    for ax in (speed, memory):
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
    settings = payload["settings"]
    fig.suptitle(f"Distributed build (Ray) vs one process, {settings['n']} docs x {settings['instructions']} "
                 f"instructions, {Path(settings['model']).name}", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, child=True)
    parser.add_argument("--model", default=None, help="model name or folder (default: the default model; "
                                                      "--quick: a tiny random Llama)")
    parser.add_argument("--n", type=int, default=None, help="documents (default 256; --quick: 64)")
    parser.add_argument("--block", type=int, default=16, help="documents per Ray block (default 16)")
    parser.add_argument("--instructions", type=int, default=2, help="instructions, encoded in one pass (default 2)")
    args = harness.parse(parser, argv)
    if harness.child_run(args, child):
        return 0
    from inbedder_index.models import DEFAULT_MODEL

    cores = harness.usable_cores()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True, prefix="ray_build-") as work:
        model = args.model or DEFAULT_MODEL
        if args.model is None and args.quick:
            from .build_memory import make_tiny_model

            model = str(Path(work) / "tiny-llama")
            for part in make_tiny_model(64, args.seed):
                part.save_pretrained(model)
        base = {"model": model, "n": args.n or (64 if args.quick else 256), "seed": args.seed,
                "instructions": args.instructions, "block": args.block, "workdir": work}
        configs = [dict(base, config=f"plain-{cores}t", threads=cores), dict(base, config="plain-1t", threads=1),
                   dict(base, config="ray-1", actors=1), dict(base, config="ray-2", actors=2)]
        results = [harness.run_in_child("benchmarks.ray_build", spec, Path(work) / f"{spec['config']}.json")
                   for spec in configs]
    harness.count_as_own(sum(r["unwaited_cpu_s"] for r in results))
    harness.finish(args, "ray_build", {"settings": base | {"workdir": None}, "results": results}, summary,
                   figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
