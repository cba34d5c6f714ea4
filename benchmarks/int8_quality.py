"""Which int8 settings keep InBedder's quality: dynamic int8 weights against float32, on ONNX Runtime.

Each candidate ``Int8Settings``: the cosine of its vectors to float32's; then the evaluation sets
for float32 and the ``--top`` candidates. A setting qualifies when its triplet harmonic mean is
within 0.02 of float32's; the fastest qualifying one is ``ort.INT8``.

    python -m benchmarks.int8_quality --quick   # 2 candidates, 16 texts, no evaluation sets
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from . import harness
from .texts import INSTRUCTIONS, mixed_texts

logger = logging.getLogger("benchmarks.int8_quality")

MAX_HM_DROP = 0.02
EVAL_SETS = ("feel-want-triplets", "topic-place-clustering", "review-sts")
HM = "feel-want-triplets.harmonic_mean"
METRICS = (HM, "feel-want-triplets.feeling", "feel-want-triplets.want", "topic-place-clustering.topic",
           "topic-place-clustering.place", "review-sts.overall")
NAMES = ("all", "all-8bit", "all-per-matrix", "float-mlp-out", "float-attention", "float-ends", "float-mlp-out-ends")


def candidates() -> dict[str, Any]:
    """Name -> ``Int8Settings``; the last is the default (MLP output projections and the first and
    last 2 layers stay float)."""
    from inbedder_index.runtimes.ort import INT8, MLP_OUT, Int8Settings

    return dict(zip(NAMES, (
        Int8Settings(), Int8Settings(reduce_range=False), Int8Settings(per_channel=False),
        Int8Settings(float_modules=(MLP_OUT,)), Int8Settings(float_modules=(r"attn|attention",)),
        Int8Settings(float_end_layers=2), INT8)))


def evaluate(enc: Any) -> dict[str, float]:
    from inbedder_index.evaluation import builtin_eval_sets, evaluate as run

    sets = {name: task for name, task in builtin_eval_sets().items() if name in EVAL_SETS}
    scores = run(enc, sets, show_progress_bar=False).scores()
    return {f"{task}.{metric}": value for task, values in scores.items() for metric, value in values.items()}


def summary(payload: dict[str, Any]) -> list[str]:
    rows = []
    for name, row in payload["rows"].items():
        scores = [f"{row['eval'][m]:.3f}" if "eval" in row else "" for m in METRICS]
        within = {True: "yes", False: "no"}.get(row.get("qualifies"), "")
        rows.append((name, f"{row['min_cosine']:.4f}", f"{row['mean_cosine']:.4f}", f"{row['seconds']:.1f}",
                     *scores, within))
    return [f"Model `{payload['model']}`, {payload['n_texts']} texts for the cosines; a setting qualifies when its "
            f"triplet harmonic mean (HM) is within {payload['max_hm_drop']} of float32's.", "",
            *harness.table(("setting", "min cosine", "mean cosine", "s", "HM", "feeling", "want", "topic", "place",
                            "STS", f"HM within {payload['max_hm_drop']}"), rows)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default="inbedder-smollm2-135m")
    parser.add_argument("--n", type=int, default=64, help="texts for the cosine stage (default: %(default)s)")
    parser.add_argument("--top", type=int, default=3, help="candidates scored on the evaluation sets (default: %(default)s)")
    parser.add_argument("--candidates", default=",".join(NAMES), help="comma-separated names (default: all)")
    args = harness.parse(parser, argv)
    names = harness.names(args.candidates)
    if args.quick:
        args.n, args.top, names = min(args.n, 16), 0, names[:2]
    from inbedder_index import InBedder

    settings = candidates()
    base = InBedder(args.model, runtime="torch")  # one PyTorch model, exported to each variant
    texts = mixed_texts(args.n, args.seed)

    def variant(quantize: Any) -> Any:
        return InBedder.from_model(base.model, base.tokenizer, model_id=base.model_id, runtime="onnx", quantize=quantize)

    fp32 = variant(None)
    seconds, reference = harness.time_call(lambda: fp32.encode(texts, INSTRUCTIONS[0], show_progress_bar=False))
    rows: dict[str, dict[str, Any]] = {"fp32": {"seconds": seconds, "min_cosine": 1.0, "mean_cosine": 1.0}}
    for name in names:
        enc = variant(settings[name])
        seconds, vectors = harness.time_call(lambda: enc.encode(texts, INSTRUCTIONS[0], show_progress_bar=False))
        cosines = harness.cosine_rows(vectors, reference)
        rows[name] = {"settings": asdict(settings[name]), "seconds": seconds, "min_cosine": float(cosines.min()),
                      "mean_cosine": float(cosines.mean()), "float_matmuls": enc.runtime.record.data["float_matmuls"]}
        logger.info("%s: min cosine %.4f, mean %.4f, %.1f s", name, rows[name]["min_cosine"], rows[name]["mean_cosine"],
                    seconds)
    ranked = sorted(names, key=lambda n: -rows[n]["mean_cosine"])[: args.top]
    if args.top:
        rows["fp32"]["eval"] = evaluate(fp32)
    for name in ranked:
        rows[name]["eval"] = evaluate(variant(settings[name]))
        rows[name]["hm_drop"] = rows["fp32"]["eval"][HM] - rows[name]["eval"][HM]
        rows[name]["qualifies"] = bool(rows[name]["hm_drop"] <= MAX_HM_DROP)
    payload = {"model": base.model_id, "n_texts": len(texts),
               "max_hm_drop": MAX_HM_DROP, "rows": rows}
    harness.finish(args, "int8_quality", payload, summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
