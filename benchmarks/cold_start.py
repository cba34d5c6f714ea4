"""Cold start of ``inbedder-index search``: a fresh process on a small index, against
``python -c "import torch, transformers"`` on the same machine in the same run.

1. The demo's index (``examples/data/customer-messages.jsonl``: 16 messages, two instructions) is
   built with the default model in a temporary folder; this also puts the merged model in the
   model cache, as any first use does.
2. ``--repeats`` rounds, each running in turn (fresh processes, warm file cache):
   the baseline ``python -c "import torch, transformers"``, ``python -c "import inbedder_index"``,
   and ``inbedder-index search INDEX QUERY --instruction ... -k 3``.
3. Once: the same search with ``-X importtime``, to split its time into imports and the rest
   (loading, encoding, searching), and once with an empty merged-model cache (a temporary cache
   holding only the converted base model): the one-time merge a first load pays.

Wall seconds (and CPU seconds, from the children's rusage) are medians over the rounds; the
target is search / baseline <= 2.5 (printed as MET / NOT MET). The file cache is warm: nothing
here drops the kernel's caches (the machine may be shared), so "cold" means a new process.

    python benchmarks/cold_start.py --quick      # 2 rounds
    python benchmarks/cold_start.py              # 7 rounds

Results: ``benchmarks/results/cold_start.json`` and ``cold_start.png`` (``cold_start_quick.*``).
"""

from __future__ import annotations

import logging
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS_DIR, benchmark_parser, machine_info, save_figure, save_results, setup_logging

logger = logging.getLogger("benchmarks.cold_start")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "examples" / "data" / "customer-messages.jsonl"
FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
QUERY = "I am so angry, give me my money back!"
TARGET = 2.5


def cli() -> list[str]:
    """The installed ``inbedder-index`` script (what a user runs), else ``python -m inbedder_index.cli``."""
    script = Path(sys.executable).with_name("inbedder-index")
    return [str(script)] if script.exists() else [sys.executable, "-m", "inbedder_index.cli"]


def timed(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall and CPU seconds of one run of ``command`` in a fresh process (its output kept)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout, "stderr": done.stderr}


def import_split(command: list[str]) -> dict[str, float]:
    """Seconds of a run spent importing (top-level modules' cumulative ``-X importtime``) and the rest."""
    run = timed([command[0], "-X", "importtime", *command[1:]] if command[0] == sys.executable else
                [sys.executable, "-X", "importtime", *command])
    imports_us = 0
    heaviest: list[tuple[int, str]] = []
    for line in run["stderr"].splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line)  # one space: a top-level import
        if match:
            imports_us += int(match.group(1))
            heaviest.append((int(match.group(1)), match.group(2).strip()))
    heaviest.sort(reverse=True)
    return {"wall_s": run["wall_s"], "imports_s": imports_us / 1e6, "rest_s": run["wall_s"] - imports_us / 1e6,
            "heaviest_imports": [{"module": name, "s": round(us / 1e6, 3)} for us, name in heaviest[:8]]}


def build_index(folder: Path) -> None:
    """The demo's index with the default model (this also converts and merges the model once)."""
    subprocess.run([*cli(), "build", str(folder), "--input", str(DOCS), "--instruction", FEEL,
                    "--instruction", WANT], check=True, capture_output=True, text=True)


def first_merge(search: list[str], work: Path) -> dict[str, Any]:
    """A search whose merged-model cache is empty (the converted base is linked in): the one-time merge."""
    from inbedder_index.models import smollm2_folder

    base = smollm2_folder()
    cache = work / "fresh-cache"
    cache.mkdir()
    (cache / base.name).symlink_to(base, target_is_directory=True)
    first = timed(search, env={**os.environ, "INBEDDER_INDEX_CACHE": str(cache)})
    second = timed(search, env={**os.environ, "INBEDDER_INDEX_CACHE": str(cache)})
    return {"first_s": first["wall_s"], "then_s": second["wall_s"]}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["import torch,\ntransformers", "import\ninbedder_index", "inbedder-index\nsearch",
              "first search\n(merges once)"]
    values = [result["baseline"]["median_wall_s"], result["import_package"]["median_wall_s"],
              result["search"]["median_wall_s"], result["first_merge"]["first_s"]]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(labels, values, color=["#888888", "#88aadd", "#3366cc", "#cc8844"])
    ax.axhline(TARGET * values[0], color="red", linestyle="--", linewidth=1, label=f"target: {TARGET}x baseline")
    ax.bar_label(bars, fmt="%.2f s")
    ax.set_ylabel("wall seconds (median)")
    ax.set_title(f"cold start: search / baseline = {result['ratio']:.2f}x")
    ax.legend()
    save_figure(fig, path)


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"median_wall_s": statistics.median(r["wall_s"] for r in runs),
            "min_wall_s": min(r["wall_s"] for r in runs),
            "median_cpu_s": statistics.median(r["cpu_s"] for r in runs),
            "all_wall_s": [round(r["wall_s"], 3) for r in runs]}


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__)
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 7; --quick: 2)")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    repeats = args.repeats or (2 if args.quick else 7)
    name = "cold_start_quick" if args.quick else "cold_start"
    load_start = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="cold_start-"))
    try:
        index = work / "customer-index"
        logger.info("building %s with the default model", index)
        build_index(index)
        search = [*cli(), "search", str(index), QUERY, "--instruction", FEEL, "-k", "3"]
        commands = {
            "baseline": [sys.executable, "-c", "import torch, transformers"],
            "import_package": [sys.executable, "-c", "import inbedder_index"],
            "search": search,
        }
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in commands}
        for round_number in range(repeats):
            for key, command in commands.items():
                runs[key].append(timed(command))
            logger.info("round %d/%d: baseline %.2f s, search %.2f s", round_number + 1, repeats,
                        runs["baseline"][-1]["wall_s"], runs["search"][-1]["wall_s"])
        answer = runs["search"][-1]
        split = import_split(search)
        merge = first_merge(search, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result: dict[str, Any] = {key: summary(value) for key, value in runs.items()}
    result["ratio"] = result["search"]["median_wall_s"] / result["baseline"]["median_wall_s"]
    result["ratio_cpu"] = result["search"]["median_cpu_s"] / result["baseline"]["median_cpu_s"]
    result["target"] = TARGET
    result["met"] = result["ratio"] <= TARGET
    result["search_split"] = split
    result["first_merge"] = merge
    result["search_output"] = {"stdout": answer["stdout"], "stderr": answer["stderr"]}
    info = machine_info("cpu")
    info["load_average_1m_start"] = load_start
    info["load_average_1m_end"] = os.getloadavg()[0]

    print(f"\ncold_start ({'quick' if args.quick else 'full'}, {repeats} rounds): {info['cpu_model']}, "
          f"{info['usable_cores']} cores, load {load_start:.1f} at start, {info['load_average_1m_end']:.1f} at end")
    print(f"{'command':<40} {'wall s (median)':>16} {'min':>7} {'cpu s':>7}")
    for key, label in (("baseline", 'python -c "import torch, transformers"'),
                       ("import_package", 'python -c "import inbedder_index"'), ("search", "inbedder-index search")):
        row = result[key]
        print(f"{label:<40} {row['median_wall_s']:>16.2f} {row['min_wall_s']:>7.2f} {row['median_cpu_s']:>7.2f}")
    print(f"search: {split['imports_s']:.2f} s importing, {split['rest_s']:.2f} s loading, encoding, searching; "
          f"heaviest imports: " + ", ".join(f"{i['module']} {i['s']:.2f}" for i in split["heaviest_imports"][:4]))
    print(f"first search after the merged-model cache is emptied: {merge['first_s']:.2f} s (merges once), "
          f"then {merge['then_s']:.2f} s")
    print(f"search / baseline: {result['ratio']:.2f}x wall, {result['ratio_cpu']:.2f}x CPU; target <= {TARGET}x: "
          f"{'MET' if result['met'] else 'NOT MET'}")
    print(f"search output on stderr: {answer['stderr']!r}")
    if not args.no_save:
        save_results(name, {"machine": info, "repeats": repeats, "query": QUERY, "instruction": FEEL, **result})
        plot(result, RESULTS_DIR / f"{name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
