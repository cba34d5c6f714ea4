"""Texts per second of ``InBedder.encode`` on each runtime against the published reference procedure.

Side by side in one run, on the same model, mixed-length texts, batch size and token ids
(``common.compare_procedures``):

- reference: InBedder's published procedure (``generate(max_new_tokens=3,
  output_hidden_states=True)``, left-padded, length-sorted batches), fed ``encode``'s prompt ids;
- torch, onnx, onnx-int8: ``InBedder.encode`` as a user calls it (tokenisation, length-sorted
  right-padded batches, one forward pass, pooling, normalisation) with ``runtime="torch"``,
  ``runtime="onnx"`` and ``runtime="onnx", quantize="int8"``; one model in memory;
- st-lasttoken: sentence-transformers over the same model folder with
  ``Pooling(pooling_mode="lasttoken")`` on the pre-formatted prompt strings.

Each round runs every procedure once over all texts, in an order rotated every round, and a
large fp32 matmul beside them (the machine's practical peak on the same threads); figures are
medians over rounds. Reported per procedure: texts/s, speed against the reference, prompt
tokens/s, useful GFLOP/s and its fraction of the peak, and the cosine of its vectors to
InBedder's (torch). Targets (CPU): onnx >= 2.5x the reference at min cosine >= 0.9999; int8
>= 3.5x (its quality is ``int8_quality.py``'s).

Run from the repository root::

    python benchmarks/encode_speed.py --quick     # seconds: checks that everything runs
    python benchmarks/encode_speed.py             # 256 mixed texts, batch 32, 3 rounds

Results: ``benchmarks/results/encode_speed.{json,png}`` (``encode_speed_quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    INSTRUCTIONS,
    RESULTS_DIR,
    add_common_args,
    compare_procedures,
    machine_info,
    mixed_texts,
    plot_comparison,
    print_comparison,
    runtime_encoders,
    save_results,
    sentence_transformers_lasttoken,
    setup_logging,
)

logger = logging.getLogger("benchmarks.encode_speed")

TARGETS = {"onnx": {"vs_reference": 2.5, "min_cosine": 0.9999}, "onnx-int8": {"vs_reference": 3.5}}


def check_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    verdicts = {}
    for name, target in TARGETS.items():
        row = result["procedures"].get(name)
        if row is None:
            continue
        met = row["vs_reference"] >= target["vs_reference"] and row["min_cosine_to_inbedder"] >= target.get("min_cosine", -1)
        verdicts[name] = {**target, "vs_reference_measured": row["vs_reference"],
                          "min_cosine_measured": row["min_cosine_to_inbedder"], "met": bool(met)}
    return verdicts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="inbedder-smollm2-135m", help="built-in name, hub id or folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=256, help="number of texts (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians count (default: %(default)s)")
    parser.add_argument("--instruction", default=INSTRUCTIONS[0])
    parser.add_argument("--runtimes", default="onnx,onnx-int8", help="besides torch (default: %(default)s)")
    parser.add_argument("--no-st", action="store_true", help="leave sentence-transformers out")
    parser.add_argument("--medium-fraction", type=float, default=0.06, help="share of ~150-word texts")
    parser.add_argument("--long-fraction", type=float, default=0.0, help="share of patent-like texts (cut at 512 tokens)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (ONNX Runtime follows it)")
    parser.add_argument("--out", default=None, help="results name (default: encode_speed, or encode_speed_quick)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.batch_size, args.rounds = min(args.n, 8), min(args.batch_size, 4), 1
    setup_logging(args.verbose)
    if args.threads:
        torch.set_num_threads(args.threads)

    from inbedder_index import InBedder

    started = time.perf_counter()
    texts = mixed_texts(args.n, args.seed, args.medium_fraction, args.long_fraction)
    base = InBedder(args.model, batch_size=args.batch_size)
    encoders = runtime_encoders(base, [r for r in args.runtimes.split(",") if r] if base.device.type == "cpu" else [])
    with tempfile.TemporaryDirectory(prefix="st-model-") as folder:
        st_model = None if args.no_st else sentence_transformers_lasttoken(base, Path(folder))
        result = compare_procedures(encoders, texts, args.instruction, args.batch_size, args.rounds, st_model)
    result["targets"] = check_targets(result)
    info = machine_info(base.device)
    print(f"\nencode_speed ({'quick' if args.quick else 'full'}): {base.model_id}, {info['cpu_model']}, "
          f"{torch.get_num_threads()} threads, device {base.device}")
    print_comparison("mixed texts", result)
    for name, verdict in result["targets"].items():
        cosine = f" with min cosine >= {verdict['min_cosine']}" if "min_cosine" in verdict else ""
        print(f"   target {name}: >= {verdict['vs_reference']}x the reference{cosine}: "
              f"{'MET' if verdict['met'] else 'NOT MET'}" + ("  (quick run: too small to judge)" if args.quick else ""))
    elapsed = time.perf_counter() - started
    print(f"\n(total {elapsed:.0f} s)")
    if not args.no_save:
        name = args.out or ("encode_speed_quick" if args.quick else "encode_speed")
        settings = {k: v for k, v in vars(args).items() if k not in {"no_save", "verbose"}}
        path = save_results(name, {"quick": args.quick, "machine": info, "settings": settings, "model": base.model_id,
                                   "result": result, "elapsed_s": round(elapsed, 1)})
        plot_comparison({"mixed texts": result}, RESULTS_DIR / f"{name}.png",
                        f"encode speed, {base.model_id}, {info['cpu_model']} x{torch.get_num_threads()} threads")
        logger.info("saved %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
