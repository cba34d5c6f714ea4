"""Cold start of ``inbedder-index search``: a fresh process on a small index, against
``python -c "import torch, transformers"`` on the same machine in the same run.

Rounds of fresh processes (warm file cache): the baseline, ``import inbedder_index``, the default
search and ``search --runtime torch``, with wall and CPU seconds and peak memory; then the search
under ``-X importtime`` and with a fresh model cache (the one-time merge and export). Targets:
search / baseline <= 1.0; the search's peak memory at most half of the PyTorch search's.

    python -m benchmarks.cold_start --quick      # 2 rounds
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import harness

logger = logging.getLogger("benchmarks.cold_start")

DOCS = harness.ROOT / "examples" / "data" / "customer-messages.jsonl"
FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
QUERY = "I am so angry, give me my money back!"
TARGET = 1.0  # search / baseline
MEMORY_TARGET = 0.5  # the default search's peak memory / the PyTorch search's
HEAVY = ("torch", "transformers")
RUNS = {  # the fresh processes timed each round: how the table and the figure name them
    "baseline": ('`python -c "import torch, transformers"`', "import torch,\ntransformers"),
    "import_package": ('`python -c "import inbedder_index"`', "import\ninbedder_index"),
    "search": ("`inbedder-index search`", "inbedder-index\nsearch"),
    "search_torch": ("`inbedder-index search --runtime torch`", "search\n--runtime torch"),
}


def cli() -> list[str]:
    """The installed ``inbedder-index`` script (what a user runs), else ``python -m inbedder_index.cli``."""
    script = Path(sys.executable).with_name("inbedder-index")
    return [str(script)] if script.exists() else [sys.executable, "-m", "inbedder_index.cli"]


def timed(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Wall and CPU seconds and peak memory of one run of ``command`` in a fresh process (its output kept)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, peak memory included
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": stdout, "stderr": stderr}


def import_split(command: list[str]) -> dict[str, Any]:
    """Seconds of a run spent importing (top-level modules' cumulative ``-X importtime``) and the rest."""
    run = timed(command, {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
    lines = run["stderr"].splitlines()
    matches = [re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", line) for line in lines]  # one space: top-level
    heaviest = sorted(((int(m.group(1)), m.group(2).strip()) for m in matches if m), reverse=True)
    imports_s = sum(us for us, _ in heaviest) / 1e6
    imported = {re.sub(r"^import time:.*\| ", "", line).strip() for line in lines}
    return {"wall_s": run["wall_s"], "imports_s": imports_s, "rest_s": run["wall_s"] - imports_s,
            "heaviest_imports": [{"module": name, "s": round(us / 1e6, 3)} for us, name in heaviest[:8]],
            "heavy_imported": [name for name in HEAVY if name in imported]}


def first_merge(search: list[str], work: Path) -> dict[str, Any]:
    """A search whose model cache holds only the converted base (linked in): the one-time merge and export."""
    from inbedder_index.models import smollm2_folder

    base = smollm2_folder()
    cache = work / "fresh-cache"
    cache.mkdir()
    (cache / base.name).symlink_to(base, target_is_directory=True)
    env = {**os.environ, "INBEDDER_INDEX_CACHE": str(cache)}
    return {"first_s": timed(search, env)["wall_s"], "then_s": timed(search, env)["wall_s"]}


def plot(result: dict[str, Any]) -> Any:
    values = [result[key]["median_wall_s"] for key in RUNS] + [result["first_merge"]["first_s"]]
    fig, ax = harness.pyplot().subplots(figsize=(8, 4))
    bars = ax.bar([figure for _, figure in RUNS.values()] + ["first search\n(merges, exports once)"], values,
                  color=["#888888", "#88aadd", "#3366cc", "#99bb66", "#cc8844"])
    target = result["target"]
    ax.axhline(target * values[0], color="red", linestyle="--", linewidth=1, label=f"target: {target}x baseline")
    ax.bar_label(bars, fmt="%.2f s")
    ax.set(ylabel="wall seconds (median)", title=f"cold start: search / baseline = {result['ratio']:.2f}x")
    ax.legend()
    return fig


def summary(result: dict[str, Any]) -> list[str]:
    split, merge, quick = result["search_split"], result["first_merge"], result["quick"]
    ratio, target, search = result["ratio"], result["target"], result["search"]
    rows = [(label, *(f"{result[key][field]:.2f}" for field in ("median_wall_s", "min_wall_s", "median_cpu_s")),
             f"{result[key]['median_peak_rss_mib']:,.0f}") for key, (label, _) in RUNS.items()]
    heaviest = ", ".join(f"{i['module']} {i['s']:.2f} s" for i in split["heaviest_imports"][:4])
    over = max(0.0, search["median_wall_s"] - target * result["baseline"]["median_wall_s"])
    memory_over = result["memory_ratio"] - result["memory_target"]
    return [f"{result['repeats']} rounds, fresh processes, warm file cache; load average "
            f"{result['machine']['load_average_1m_end']:.1f} at the end.", "",
            *harness.table(("command", "wall s (median)", "min", "CPU s (median)", "peak MiB (median)"), rows), "",
            f"- search: {split['imports_s']:.2f} s importing, {split['rest_s']:.2f} s loading, encoding and "
            f"searching; heaviest imports: {heaviest}; imports "
            f"{', '.join(split['heavy_imported']) or 'neither torch nor transformers'}",
            f"- first search with an empty model cache beside the converted base: {merge['first_s']:.2f} s "
            f"(merges and exports once), then {merge['then_s']:.2f} s",
            f"- target: search / baseline <= {target}x: {ratio:.2f}x wall, {result['ratio_cpu']:.2f}x CPU, "
            f"{harness.verdict(result['met'], quick)}" + ("" if result["met"] else f" (over by {ratio - target:.2f}x: "
                                                          f"{over:.2f} s; see where the search's time goes above)"),
            f"- target: search peak memory <= {result['memory_target']:.0%} of the PyTorch search's: "
            f"{search['median_peak_rss_mib']:,.0f} MiB vs {result['search_torch']['median_peak_rss_mib']:,.0f} MiB = "
            f"{result['memory_ratio']:.0%}, {harness.verdict(result['memory_met'], quick)}"
            + ("" if result["memory_met"] else f" (over by {memory_over:.0%} of the PyTorch search's)")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 7; --quick: 2)")
    args = harness.parse(parser, argv)
    repeats = args.repeats or (2 if args.quick else 7)
    work = Path(tempfile.mkdtemp(prefix="cold_start-"))
    try:
        index = work / "customer-index"
        logger.info("building %s with the default model", index)
        subprocess.run([*cli(), "build", str(index), "--input", str(DOCS), "--instruction", FEEL,
                        "--instruction", WANT], check=True, capture_output=True, text=True)
        search = [*cli(), "search", str(index), QUERY, "--instruction", FEEL, "-k", "3"]
        commands = dict(zip(RUNS, ([sys.executable, "-c", "import torch, transformers"],
                                   [sys.executable, "-c", "import inbedder_index"], search,
                                   [*search, "--runtime", "torch"])))
        runs: dict[str, list[dict[str, Any]]] = {key: [] for key in RUNS}
        for round_number in range(repeats):
            for key, command in commands.items():
                runs[key].append(timed(command))
            logger.info("round %d/%d: baseline %.2f s, search %.2f s (torch %.2f s)", round_number + 1, repeats,
                        runs["baseline"][-1]["wall_s"], runs["search"][-1]["wall_s"],
                        runs["search_torch"][-1]["wall_s"])
        split = import_split(search)
        merge = first_merge(search, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result: dict[str, Any] = {
        key: {"median_wall_s": statistics.median(r["wall_s"] for r in value),
              "min_wall_s": min(r["wall_s"] for r in value),
              "median_cpu_s": statistics.median(r["cpu_s"] for r in value),
              "all_wall_s": [round(r["wall_s"], 3) for r in value],
              "median_peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in value)}
        for key, value in runs.items()}
    ratio = result["search"]["median_wall_s"] / result["baseline"]["median_wall_s"]
    memory_ratio = result["search"]["median_peak_rss_mib"] / result["search_torch"]["median_peak_rss_mib"]
    answer = runs["search"][-1]
    result.update(ratio=ratio, ratio_cpu=result["search"]["median_cpu_s"] / result["baseline"]["median_cpu_s"],
                  target=TARGET, met=ratio <= TARGET, search_split=split, first_merge=merge,
                  memory_target=MEMORY_TARGET, memory_ratio=memory_ratio, memory_met=memory_ratio <= MEMORY_TARGET,
                  search_output={"stdout": answer["stdout"], "stderr": answer["stderr"]})
    payload = {"repeats": repeats,
               "query": QUERY, "instruction": FEEL, **result}
    harness.finish(args, "cold_start", payload, summary, figure=plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
