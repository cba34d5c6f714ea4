"""The benchmarks package: every script runs as ``python -m benchmarks.NAME``, and RESULTS.md is
exactly what ``python -m benchmarks.report`` makes of ``benchmarks/results/*.json``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import harness, report

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", report.SCRIPTS)
def test_each_script_runs_as_a_module(name: str) -> None:
    done = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--quick" in done.stdout and "--no-save" in done.stdout


def test_results_page_is_what_the_report_makes_of_the_results() -> None:
    done = subprocess.run([sys.executable, "-m", "benchmarks.report", "--check"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert report.PAGE.read_text() == report.render()


def test_report_follows_the_result_files(tmp_path: Path) -> None:
    source = json.loads((report.RESULTS_DIR / "threads.json").read_text())
    source["results"]["encode"]["1"]["per_item_ms"] = 1234.5
    (tmp_path / "threads.json").write_text(json.dumps(source))
    shutil.copy(report.RESULTS_DIR / "encode_speed_profile.json", tmp_path)  # an earlier format
    (tmp_path / "latency_quick.json").write_text(json.dumps({"benchmark": "latency_quick", "quick": True,
                                                             "timestamp_utc": "2026-01-01T00:00:00+00:00"}))
    page = report.render(tmp_path)
    assert "## threads" in page and "| encode | 1234.50 |" in page
    assert "1689.70" not in page  # the committed figure is gone with its file
    quick = page.split("## Quick runs", 1)[1]
    assert "latency_quick.json" in quick and "## latency_quick" not in page
    earlier = page.split("## Earlier formats", 1)[1]
    assert "encode_speed_profile.json" in earlier and "earlier version of `encode_speed`" in earlier


def test_each_figure_draws_from_its_recorded_results(tmp_path: Path) -> None:
    """The figure a script saves after a long run is drawn from the JSON it saved first: draw each
    one from the recorded results, so a broken figure never waits for the next full run."""
    import importlib

    page = report.render()
    drawn = []
    for path in sorted(report.RESULTS_DIR.glob("*.json")):
        if f"\n## {path.stem}\n" not in page:  # quick runs and earlier formats are not summarised
            continue
        module = importlib.import_module(f"benchmarks.{report.script_of(path.stem)}")
        if hasattr(module, "plot"):
            harness.save_figure(module.plot(json.loads(path.read_text())), tmp_path / f"{path.stem}.png")
            drawn.append(path.stem)
    assert {"encode_speed", "latency", "index_speed", "build_memory", "cold_start", "serve_load", "ray_build"} <= set(drawn)
    assert all((tmp_path / f"{stem}.png").stat().st_size > 10_000 for stem in drawn)
