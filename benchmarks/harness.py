"""What every benchmark shares: flags, logging, machine info, timing, results, memory probes and
fresh processes, so that each script holds only its own question."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
MIB = 2**20

logger = logging.getLogger("benchmarks")

Summary = Callable[[dict[str, Any]], list[str]]


def parser(doc: str, *, child: bool = False) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring's first paragraph as description and the common flags;
    ``child`` adds the hidden flags of a configuration run in a fresh process (``run_in_child``)."""
    made = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--quick", action="store_true", help="tiny sizes, for checking that the script works")
    made.add_argument("--seed", type=int, default=0)
    made.add_argument("--no-save", action="store_true", help="do not write benchmarks/results/*.json")
    made.add_argument("--out", default=None, help="results name (default: the script's, with _quick for --quick)")
    made.add_argument("-v", "--verbose", action="store_true")
    if child:
        made.add_argument("--child", default=None, help=argparse.SUPPRESS)
        made.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    return made


def parse(made: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the flags and set up logging: progress goes to stderr, figures to stdout."""
    args = made.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging  # generate() warns about unused sampling flags

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    total, mine = _cpu_seconds()
    _START.update(wall=time.perf_counter(), total=total, mine=mine, load=load_average())
    return args


def names(text: str) -> list[str]:
    """A comma-separated flag as a list, empty items dropped."""
    return [item for item in text.split(",") if item]


def recorded(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a result records as its settings."""
    return {key: value for key, value in vars(args).items() if key not in {"no_save", "verbose", "child", "child_out"}}


# --------------------------------------------------------------------------- machine


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def load_average() -> float:
    """The 1-minute load average: how busy the machine was around a figure."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


_START: dict[str, float] = {}  # the clocks when ``parse`` ran: the run's start


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds the cores this process may run on have spent working so far (``/proc/stat``: user,
    nice, system, and steal, the hypervisor's other guests; not interrupts, where a benchmark's own
    I/O lands; NaN where the kernel does not say), and those of this process with the children it
    has waited for."""
    own = os.times()
    mine = own.user + own.system + own.children_user + own.children_system
    cores = {f"cpu{n}" for n in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}
    try:
        rows = [line.split() for line in Path("/proc/stat").read_text().splitlines() if line.split(" ")[0] in cores]
        ticks = sum(int(row[1]) + int(row[2]) + int(row[3]) + int(row[8]) for row in rows)
    except (OSError, ValueError, IndexError):
        return float("nan"), mine
    return (ticks / os.sysconf("SC_CLK_TCK") if rows else float("nan")), mine


def count_as_own(cpu_seconds: float) -> None:
    """Count CPU time that this benchmark's processes used but nothing here waited for (Ray's
    workers) as the benchmark's, not as other jobs'."""
    _START["mine"] -= cpu_seconds


def machine_info(device: Any = "cpu") -> dict[str, Any]:
    """What a figure was measured on: CPU, cores, threads, library versions, device, the load average
    at the run's start and end, and the cores other processes kept busy meanwhile (CPU time not this
    benchmark's nor its waited-for children's, over the run's wall time): the load average counts the
    benchmark itself and lags a minute behind, so it cannot tell a quiet run from a shared one."""
    import torch
    import transformers

    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")
    flags = set((_cpuinfo("flags") or "").split())
    info: dict[str, Any] = {
        "cpu_model": _cpuinfo("model name") or platform.processor() or platform.machine(),
        "cpu_flags": [flag for flag in wanted if flag in flags], "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(), "torch_threads": torch.get_num_threads(), "load_average_1m": load_average(),
        "python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
        "numpy": np.__version__, "transformers": transformers.__version__, "device": str(device),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    if _START:
        total, mine = _cpu_seconds()
        others = (total - _START["total"] - (mine - _START["mine"])) / (time.perf_counter() - _START["wall"])
        info.update(load_average_1m_start=_START["load"], load_average_1m_end=info["load_average_1m"],
                    other_processes_cores=None if np.isnan(others) else round(max(others, 0.0), 3))
    return info


def is_busy(info: dict[str, Any]) -> bool:
    """Whether other jobs shared the cores, so that the timings are noisy: other processes kept more
    than a tenth of them busy during the run; for results that predate that figure, a load average
    at the start above half of them."""
    cores = info.get("usable_cores") or 1
    if info.get("other_processes_cores") is not None:
        return info["other_processes_cores"] > 0.1 * cores
    load = info.get("load_average_1m_start", info.get("load_average_1m"))
    return load is not None and load > 0.5 * cores


def describe_machine(payload: dict[str, Any]) -> str:
    """One line on where a result was measured: CPU, cores, memory, torch, GPU, and how busy it was."""
    info = payload.get("machine", {})
    load = info.get("load_average_1m_start", info.get("load_average_1m"))
    parts = [info.get("cpu_model", "unknown CPU"), f"{info.get('usable_cores', '?')} usable cores",
             f"{info.get('memory_gib', '?')} GiB", f"torch {info.get('torch', '?')}",
             *([info["gpu"]] if info.get("gpu") else [])]
    if info.get("other_processes_cores") is not None:
        parts.append(f"other processes kept {info['other_processes_cores']:.2f} cores busy during the run")
    elif load is not None:
        parts.append(f"load average {load:.1f} at the start")
    noisy = " (other jobs shared these cores: the timings are noisy)" if is_busy(info) else ""
    return ", ".join(parts) + noisy


# --------------------------------------------------------------------------- timing


def time_call(fn: Callable[[], Any], device: Any = "cpu") -> tuple[float, Any]:
    """Seconds one call takes and its result; on a GPU, queued work is waited for on both sides."""
    cuda = str(device).startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def summarise(seconds: Sequence[float]) -> dict[str, Any]:
    return {"best_s": min(seconds), "median_s": statistics.median(seconds), "all_s": [round(s, 4) for s in seconds]}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity in float64."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.maximum(den, 1e-300)


# --------------------------------------------------------------------------- results


def _plain(value: Any) -> Any:
    """What ``json`` cannot write by itself: NumPy scalars and arrays, paths."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"a result holds a {type(value).__name__}, which JSON cannot represent")


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> None:
    """Write a matplotlib figure as the benchmark's PNG and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)


def finish(args: argparse.Namespace, name: str, payload: dict[str, Any], summary: Summary,
           figure: Callable[[dict[str, Any]], Any] | None = None, device: Any = "cpu") -> None:
    """Record the run's ``machine_info`` (on ``device``) and ``--quick`` unless ``payload`` has them,
    print the figures (the lines ``RESULTS.md`` shows for this run) and, unless ``--no-save``, keep the
    JSON in ``benchmarks/results/`` (``--out``, else ``name``, ``name_quick`` for a quick run; written to
    a ``.tmp`` file, then renamed) and ``figure``'s PNG beside it."""
    name = args.out or (f"{name}_quick" if args.quick else name)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    payload = {"quick": args.quick, **payload, "machine": payload.get("machine") or machine_info(device)}
    body = {"benchmark": name, "timestamp_utc": stamp, **json.loads(json.dumps(payload, default=_plain))}
    print(f"\n{name}: {describe_machine(body)}\n")
    print("\n".join(summary(body)))
    if args.no_save:
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    os.replace(path.with_suffix(".json.tmp"), path)
    fig = figure(body) if figure is not None else None
    if fig is not None:
        save_figure(fig, path.with_suffix(".png"))
    logger.info("saved %s", path)


def verdict(met: bool, quick: bool = False) -> str:
    """How every benchmark states a target: **MET** or **NOT MET**, and whether the run was too small."""
    return ("**MET**" if met else "**NOT MET**") + (" (quick run: too small to judge)" if quick else "")


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A Markdown table (cells are shown as given)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- memory probes


def _status_bytes(field: str, pid: int | str = "self") -> int | None:
    """A size from ``/proc/PID/status`` (VmRSS, VmHWM) in bytes; None where the kernel does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def peak_rss_bytes() -> int:
    """Peak resident set size since start or since the last ``reset_peak()`` (VmHWM)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # never reset


def peak_rss_of(pid: int) -> int | None:
    """Peak resident set size of another live process (a server under test), or None."""
    return _status_bytes("VmHWM", pid)


def rss_bytes() -> int:
    """Current resident set size (VmRSS); the peak where the kernel does not say."""
    return _status_bytes("VmRSS") or peak_rss_bytes()


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


# --------------------------------------------------------------------------- fresh processes


def run_in_child(module: str, spec: dict[str, Any], out: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m module --child SPEC --child-out OUT`` in a fresh process (so its start-up and
    peak memory are its own) and return the JSON it wrote."""
    command = [sys.executable, "-m", module, "--child", json.dumps(spec), "--child-out", str(out)]
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    return json.loads(out.read_text())


def child_run(args: argparse.Namespace, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
    """In a process started by ``run_in_child``: run ``fn`` on its spec, write the result, return True."""
    if not args.child:
        return False
    Path(args.child_out).write_text(json.dumps(fn(json.loads(args.child)), indent=2, default=_plain))
    return True
