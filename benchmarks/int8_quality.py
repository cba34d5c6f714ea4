"""Which int8 settings keep InBedder's quality: dynamic int8 weights against float32, on ONNX Runtime.

Candidates (``CANDIDATES``: ``Int8Settings`` of per-channel scales, 7-bit range and which
modules stay float32) are scored in two stages on the same model:

1. cosine of each candidate's vectors to the float32 graph's on ``--n`` mixed texts (min and
   mean), and one timed call each;
2. the project's evaluation sets (``inbedder_index.evaluation``: feel/want triplet success per
   aspect and their harmonic mean, topic/place clustering v-measure, instructed STS) for float32
   and the ``--top`` candidates by mean cosine.

The rule (issue 11): a setting qualifies when its triplet harmonic mean is within 0.02 of
float32's; the fastest qualifying one becomes ``ort.INT8`` (what ``quantize="int8"`` means).

Run from the repository root::

    python benchmarks/int8_quality.py --quick   # 2 candidates, 16 texts, no evaluation sets
    python benchmarks/int8_quality.py           # every candidate, 64 texts, the top 3 on the sets

Results: ``benchmarks/results/int8_quality.json`` (``int8_quality_quick.json`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import INSTRUCTIONS, add_common_args, cosine_rows, machine_info, mixed_texts, save_results, setup_logging  # noqa: E402

from inbedder_index.runtimes.ort import INT8, MLP_OUT, Int8Settings  # noqa: E402

logger = logging.getLogger("benchmarks.int8_quality")

MAX_HM_DROP = 0.02
CANDIDATES: dict[str, Int8Settings] = {
    "all": Int8Settings(),
    "all-8bit": Int8Settings(reduce_range=False),
    "all-per-matrix": Int8Settings(per_channel=False),
    "float-mlp-out": Int8Settings(float_modules=(MLP_OUT,)),
    "float-attention": Int8Settings(float_modules=(r"attn|attention",)),
    "float-ends": Int8Settings(float_end_layers=2),
    "float-mlp-out-ends": INT8,  # the default: MLP output projections and the first and last 2 layers float
}
EVAL_SETS = ("feel-want-triplets", "topic-place-clustering", "review-sts")


def evaluate(enc: Any) -> dict[str, float]:
    from inbedder_index.evaluation import builtin_eval_sets, evaluate as run

    sets = {name: task for name, task in builtin_eval_sets().items() if name in EVAL_SETS}
    scores = run(enc, sets, show_progress_bar=False).scores()
    return {f"{task}.{metric}": value for task, values in scores.items() for metric, value in values.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="inbedder-smollm2-135m")
    parser.add_argument("--n", type=int, default=64, help="texts for the cosine stage (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, help="candidates scored on the evaluation sets (default: %(default)s)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated names (default: all)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    if args.quick:
        args.n, args.top, names = min(args.n, 16), 0, names[:2]
    setup_logging(args.verbose)

    from inbedder_index import InBedder

    base = InBedder(args.model)
    texts = mixed_texts(args.n, args.seed)

    def variant(quantize: Any) -> Any:
        return InBedder.from_model(base.model, base.tokenizer, model_id=base.model_id, runtime="onnx", quantize=quantize)

    fp32 = variant(None)
    started = time.perf_counter()
    reference = fp32.encode(texts, INSTRUCTIONS[0], show_progress_bar=False)
    rows: dict[str, dict[str, Any]] = {"fp32": {"seconds": time.perf_counter() - started, "min_cosine": 1.0, "mean_cosine": 1.0}}
    for name in names:
        enc = variant(CANDIDATES[name])
        started = time.perf_counter()
        vectors = enc.encode(texts, INSTRUCTIONS[0], show_progress_bar=False)
        cosines = cosine_rows(vectors, reference)
        rows[name] = {"settings": asdict(CANDIDATES[name]), "seconds": time.perf_counter() - started,
                      "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()),
                      "float_matmuls": enc.runtime.record["float_matmuls"]}
        logger.info("%s: min cosine %.4f, mean %.4f, %.1f s", name, rows[name]["min_cosine"], rows[name]["mean_cosine"],
                    rows[name]["seconds"])
    ranked = sorted(names, key=lambda n: -rows[n]["mean_cosine"])[: args.top]
    if args.top:
        rows["fp32"]["eval"] = evaluate(fp32)
        for name in ranked:
            rows[name]["eval"] = evaluate(variant(CANDIDATES[name]))
    hm_key = "feel-want-triplets.harmonic_mean"
    base_hm = rows["fp32"].get("eval", {}).get(hm_key)
    for name in ranked:
        rows[name]["hm_drop"] = base_hm - rows[name]["eval"][hm_key]
        rows[name]["qualifies"] = bool(rows[name]["hm_drop"] <= MAX_HM_DROP)

    print(f"\nint8_quality ({'quick' if args.quick else 'full'}): {base.model_id}, {len(texts)} texts for the cosines")
    metrics = [hm_key, "feel-want-triplets.feeling", "feel-want-triplets.want", "topic-place-clustering.topic",
               "topic-place-clustering.place", "review-sts.overall"]
    print(f"   {'setting':<20}{'min cos':>9}{'mean cos':>10}{'s':>7}  " + "  ".join(m.split(".", 1)[1][:13] for m in metrics))
    for name, row in rows.items():
        scores = "  ".join(f"{row['eval'].get(m, float('nan')):>13.3f}" for m in metrics) if "eval" in row else ""
        verdict = ("  within 0.02 HM" if row["qualifies"] else "  HM drop > 0.02") if "qualifies" in row else ""
        print(f"   {name:<20}{row['min_cosine']:>9.4f}{row['mean_cosine']:>10.4f}{row['seconds']:>7.1f}  {scores}{verdict}")
    if not args.no_save:
        path = save_results("int8_quality_quick" if args.quick else "int8_quality",
                            {"quick": args.quick, "machine": machine_info(), "model": base.model_id, "n_texts": len(texts),
                             "max_hm_drop": MAX_HM_DROP, "rows": rows})
        logger.info("saved %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
