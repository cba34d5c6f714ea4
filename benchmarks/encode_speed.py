"""Texts per second of ``InBedder.encode`` on each runtime against the published reference procedure.

Side by side (``procedures.compare_procedures``) on mixed-length texts: the reference, ``encode`` on
torch, the default path (``InBedder(name)``: ONNX Runtime on a CPU), int8, and sentence-transformers'
last-token route. Targets (CPU): the default path >= 2.5x the reference at min cosine >= 0.9999;
int8 >= 3.5x (its quality is ``int8_quality``'s).

    python -m benchmarks.encode_speed --quick     # seconds: checks that everything runs
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import harness, procedures
from .texts import INSTRUCTIONS, mixed_texts

TARGETS = {"default": {"vs_reference": 2.5, "min_cosine": 0.9999}, "onnx": {"vs_reference": 2.5, "min_cosine": 0.9999},
           "onnx-int8": {"vs_reference": 3.5}}


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target whose runtime ran, with what it measured and whether it was met."""
    verdicts = {}
    for name, target in TARGETS.items():
        if (row := result["procedures"].get(name)) is not None:
            speed, cosine = row["vs_reference"], row["min_cosine_to_inbedder"]
            verdicts[name] = {**target, "vs_reference_measured": speed, "min_cosine_measured": cosine,
                              "met": bool(speed >= target["vs_reference"] and cosine >= target.get("min_cosine", -1))}
    return verdicts


def summary(payload: dict[str, Any]) -> list[str]:
    info = payload["machine"]
    lines = [f"Model `{payload['model']}`, {info['torch_threads']} torch thread(s), device {info['device']}.", "",
             *procedures.comparison_lines("Mixed texts", payload["result"])]
    for name, target in payload["result"]["targets"].items():
        cosine = f" at min cosine >= {target['min_cosine']}" if "min_cosine" in target else ""
        short = target["vs_reference"] - target["vs_reference_measured"]
        by = f" (missed by {short:.2f}x)" if short > 0 else ""
        if target["min_cosine_measured"] < target.get("min_cosine", -1):
            by += f" (cosine {target['min_cosine_measured']:.5f} is below {target['min_cosine']})"
        lines.append(f"- target {name}: >= {target['vs_reference']}x the reference{cosine}: "
                     f"{target['vs_reference_measured']:.2f}x at min cosine {target['min_cosine_measured']:.5f}, "
                     f"{harness.verdict(target['met'], payload['quick'])}{'' if target['met'] else by}")
    return lines


def plot(payload: dict[str, Any]) -> Any:
    """Texts/s of each procedure, annotated with its speed-up and cosine."""
    info, result = payload["machine"], payload["result"]
    rows = result["procedures"]
    fig, ax = harness.pyplot().subplots(figsize=(5.5, 4))
    ax.bar(list(rows), [row["texts_per_s"] for row in rows.values()], color=[f"C{i}" for i in range(len(rows))])
    for i, row in enumerate(rows.values()):
        ax.annotate(f"{row['vs_reference']:.2f}x\ncos {row['min_cosine_to_inbedder']:.3f}", (i, row["texts_per_s"]),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel("texts/s (median)")
    ax.set_title(f"mixed texts: {result['n_texts']} texts, ~{result['tokens']['prompt_mean']:.0f} tokens", fontsize=9)
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    ax.margins(y=0.25)
    fig.suptitle(f"encode speed, {payload['model']}, {info['cpu_model']} x{info['torch_threads']} threads", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default="inbedder-smollm2-135m", help="built-in name, hub id or folder")
    parser.add_argument("--n", type=int, default=256, help="number of texts (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians count (default: %(default)s)")
    parser.add_argument("--instruction", default=INSTRUCTIONS[0])
    parser.add_argument("--runtimes", default="default,onnx-int8",
                        help="besides torch: default (InBedder(name)), onnx, onnx-int8 (default: %(default)s)")
    parser.add_argument("--no-st", action="store_true", help="leave sentence-transformers out")
    parser.add_argument("--medium-fraction", type=float, default=0.06, help="share of ~150-word texts")
    parser.add_argument("--long-fraction", type=float, default=0.0, help="share of patent-like texts (cut at 512 tokens)")
    parser.add_argument("--threads", type=int, default=None, help="the model's CPU threads, PyTorch's and ONNX "
                                                                  "Runtime's alike (default: their own defaults)")
    args = harness.parse(parser, argv)
    if args.quick:
        args.n, args.batch_size, args.rounds = min(args.n, 8), min(args.batch_size, 4), 1
    from inbedder_index import InBedder
    from inbedder_index.threads import set_threads

    set_threads(args.threads)
    started = time.perf_counter()
    texts = mixed_texts(args.n, args.seed, args.medium_fraction, args.long_fraction)
    base = InBedder(args.model, batch_size=args.batch_size, runtime="torch")  # the reference needs PyTorch
    encoders = procedures.runtime_encoders(base, harness.names(args.runtimes) if str(base.device) == "cpu" else [])
    with tempfile.TemporaryDirectory(prefix="st-model-") as folder:
        st_model = None if args.no_st else procedures.sentence_transformers_lasttoken(base, Path(folder))
        result = procedures.compare_procedures(encoders, texts, args.instruction, args.batch_size, args.rounds, st_model)
    result["targets"] = check_targets(result)
    payload = {"settings": harness.recorded(args), "model": base.model_id, "result": result,
               "elapsed_s": round(time.perf_counter() - started, 1)}
    harness.finish(args, "encode_speed", payload, summary, figure=plot, device=base.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
