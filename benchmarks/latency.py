"""Latency of ``InBedder.encode`` in the paper's setting, and the cost of many instructions at once.

1. Short news-like and long patent-like texts through the reference and ``encode`` on each runtime.
2. The k curve: k = 1, 2, 4, 8 instructions in one shared call ``encode(texts, instructions[:k])``
   against k single-instruction calls, with their executed FLOPs and cosine. Target (long
   documents): k = 4 in <= 1.6x the time of k = 1.
3. ``--gpu-large`` (CUDA only): both on an OPT-1.3b-sized random model in bf16, against the
   measured and the datasheet bf16 peak (``benchmarks/gpu_run.sh``).

    python -m benchmarks.latency --quick        # 8 short / 2 long, k up to 4, max_length 256
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np

from . import harness
from .procedures import FlopModel, compare_procedures, comparison_lines, runtime_encoders, side_by_side
from .texts import news_texts, patent_texts

logger = logging.getLogger("benchmarks.latency")

INSTRUCTIONS = [
    "What is the topic of this text?", "Where does this take place?", "What is the sentiment of this text?",
    "Which organisation is mentioned in this text?", "Who is the main person or actor in this text?",
    "What problem does this text describe?", "When does this happen?", "What type of document is this?",
]

MODES = ("shared", "naive")  # one call with k instructions; k calls with one each
TARGET_K = 4
TARGET_K_RATIO = 1.6  # long docs: k = 4 instructions in at most 1.6x the time of k = 1
TARGET_COSINE = 0.9999
TARGET_GPU_FRACTION = 0.40  # OPT-1.3b-sized model, long texts: of the bf16 peak

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity, datasheets), matched in order against the device name
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("GH200", 989.0), ("H200", 989.0), ("H100", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L40", 181.0), ("L4", 121.0), ("RTX 4090", 165.0),
]

# OPT-1.3b's shape (facebook/opt-1.3b): the paper's opt-1.3b-InBedder backbone
LARGE_SHAPE: dict[str, int] = {"hidden_size": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
                               "num_attention_heads": 32}


def executed_flops(enc: Any, flop_model: FlopModel, texts: list[str], instructions: Sequence[str]) -> float:
    """FLOPs (unpadded) of one ``encode(texts, instructions)``: a causal model runs each text's input
    part once per group of instructions with the same input budget and each instruction's suffix on
    top of it; a masked one runs every prompt whole."""
    groups: dict[int, list[str]] = {}
    for item in instructions:
        groups.setdefault(enc.prompts.input_budget(item), []).append(item)
    total = 0.0
    for budget, members in groups.items():
        suffixes = [len(enc.prompts.suffix(item)) for item in members]
        for ids in enc.prompts.input_ids(texts):
            prefix = len(enc.prompts.prefix(ids, budget))
            if flop_model.causal:
                total += flop_model.forward(prefix) + sum(flop_model.forward(s, prefix) for s in suffixes)
            else:
                total += sum(flop_model.forward(prefix + s) for s in suffixes)
    return total


def k_curve(enc: Any, flop_model: FlopModel, texts: list[str], ks: Sequence[int], batch_size: int,
            repeats: int) -> dict[str, Any]:
    """Total time for k instructions: one shared call against k single-instruction calls, side by side
    (``flop_model`` reads the PyTorch weights, which an ONNX Runtime encoder does not hold)."""
    instructions = INSTRUCTIONS[: max(ks)]

    def call(mode: str, k: int) -> dict[str, np.ndarray]:
        if mode == "shared":
            return enc.encode(texts, instructions[:k], batch_size=batch_size, show_progress_bar=False)
        return {item: enc.encode(texts, item, batch_size=batch_size, show_progress_bar=False)
                for item in instructions[:k]}

    procedures = {f"{mode} k={k}": partial(call, mode, k) for k in ks for mode in MODES}
    seconds, out, peak, load = side_by_side(procedures, repeats, enc.device,
                                            warm_up=[partial(call, "shared", 2), partial(call, "naive", 1)])
    base = min(seconds["shared k=1"] + seconds["naive k=1"]) if ks[0] == 1 else None  # both are one pass at k = 1
    base_flops = executed_flops(enc, flop_model, texts, instructions[:1])
    points = []
    for k in ks:
        subset = instructions[:k]
        flops = {"shared": executed_flops(enc, flop_model, texts, subset),
                 "naive": sum(executed_flops(enc, flop_model, texts, [item]) for item in subset)}
        gap = max(float(1.0 - harness.cosine_rows(out[f"shared k={k}"][item], out[f"naive k={k}"][item]).min())
                  for item in subset)  # the last round's outputs (a GPU's may differ a little between rounds)
        point: dict[str, Any] = {"k": k, "max_cosine_gap": gap}
        for mode in MODES:
            best = base if k == 1 else min(seconds[f"{mode} k={k}"])
            point[mode] = {"best_s": best, "all_s": [round(s, 4) for s in seconds[f"{mode} k={k}"]],
                           "fraction_of_peak": flops[mode] / best / 1e9 / peak,
                           "flop_ratio_to_k1": flops[mode] / base_flops,  # the work's own ratio: free of machine load
                           **({"ratio_to_k1": best / base} if base else {})}
        point["naive_over_shared"] = point["naive"]["best_s"] / point["shared"]["best_s"]
        points.append(point)
    prefixes = [len(enc.prompts.prefix(ids, enc.prompts.input_budget(instructions[0])))
                for ids in enc.prompts.input_ids(texts)]
    return {"n_texts": len(texts), "repeats": repeats, "prefix_tokens_mean": float(np.mean(prefixes)),
            "prefix_tokens_max": int(max(prefixes)),
            "suffix_tokens": {item: len(enc.prompts.suffix(item)) for item in instructions}, "points": points,
            "min_cosine": 1.0 - max(p["max_cosine_gap"] for p in points), "load_average_1m": load,
            "peak_gflops": peak}


def build_large(device: str, max_length: int, batch_size: int, seed: int) -> Any:
    """An OPT-1.3b-sized ``OPTForCausalLM`` with random weights, built in place in bf16 (no 5 GB
    float32 copy on the host), with the default model's tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, OPTConfig

    from inbedder_index import InBedder
    from inbedder_index.models import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = OPTConfig(vocab_size=len(tokenizer), pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id, architectures=["OPTForCausalLM"], **LARGE_SHAPE)
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return InBedder.from_model(model.eval(), tokenizer, model_id="opt-1.3b-sized-random", device=torch.device(device),
                               max_length=max_length, batch_size=batch_size)


def run_model(label: str, enc: Any, docs: dict[str, list[str]], args: argparse.Namespace) -> dict[str, Any]:
    """One model's latency setting and k curves (``--gpu-rounds`` at least on a GPU) and the k = 4 target."""
    import torch

    gpu = str(enc.device).startswith("cuda")
    least = args.gpu_rounds if gpu else 0
    encoders = runtime_encoders(enc, [] if gpu else harness.names(args.runtimes))
    name = torch.cuda.get_device_name(enc.device) if gpu else None
    result: dict[str, Any] = {
        "model": enc.model_id, "kind": enc.kind, "parameters": sum(p.numel() for p in enc.model.parameters()),
        "dtype": str(next(enc.model.parameters()).dtype).replace("torch.", ""), "device": str(enc.device),
        "gpu": name, "max_length": enc.max_length, "max_batch_tokens": enc.max_batch_tokens,
        "datasheet_peak_tflops": next((tflops for key, tflops in PEAK_BF16_TFLOPS
                                       if name and key.lower() in name.lower()), None),
    }
    if not args.skip_latency:
        result["latency"] = {}
        for kind, texts in docs.items():
            logger.info("%s: latency setting, %d %s texts", label, len(texts), kind)
            result["latency"][kind] = compare_procedures(encoders, texts, INSTRUCTIONS[0], args.batch_size,
                                                         max(args.rounds, least))
    if args.skip_curve:
        return result
    result["curve"] = {}
    for runtime in [r for r in harness.names(args.curve_runtimes) if r in encoders]:
        curves = result["curve"][runtime] = {}
        for kind in ("long", "short"):
            logger.info("%s/%s: k curve on %d %s texts, k = %s", label, runtime, len(docs[kind]), kind, args.ks)
            curves[kind] = k_curve(encoders[runtime], FlopModel(enc), docs[kind], args.ks, args.batch_size,
                                   max(args.curve_repeats, least))
        point = {p["k"]: p for p in curves["long"]["points"]}.get(TARGET_K)
        if point and "ratio_to_k1" in point["shared"]:
            ratio = point["shared"]["ratio_to_k1"]
            curves["target"] = {"k": TARGET_K, "max_ratio": TARGET_K_RATIO, "ratio": ratio,
                                "naive_ratio": point["naive"]["ratio_to_k1"],
                                "flop_ratio": point["shared"]["flop_ratio_to_k1"], "met": bool(ratio <= TARGET_K_RATIO),
                                "cosine_ok": bool(min(curves[n]["min_cosine"] for n in docs) >= TARGET_COSINE)}
    return result


def summary(payload: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if payload.get("gpu_large_skipped"):
        lines += [f"{payload['gpu_large_skipped']}.", ""]
    for label, r in payload["runs"].items():
        gpu = f", {r['gpu']} (datasheet bf16 peak {r['datasheet_peak_tflops']} TFLOP/s)" if r["gpu"] else ""
        lines += [f"**{label}**: `{r['model']}` ({r['kind']}, {r['parameters'] / 1e6:.0f}M parameters, {r['dtype']}) "
                  f"on {r['device']}{gpu}; max_length {r['max_length']}.", ""]
        for name, result in r.get("latency", {}).items():
            lines += comparison_lines(f"Latency setting, {name} texts", result)
            if r["gpu"] and r["datasheet_peak_tflops"]:
                share = result["procedures"]["torch"]["gflops"] / 1000 / r["datasheet_peak_tflops"]
                lines += [f"torch: {share:.1%} of the datasheet bf16 peak" +
                          (f" (target >= {TARGET_GPU_FRACTION:.0%} on long texts)" if name == "long" else ""), ""]
        for runtime, curves in r.get("curve", {}).items():
            for name in ("long", "short"):
                curve = curves[name]
                sfx = curve["suffix_tokens"].values()
                lines += [f"k curve, {runtime}, {name} documents: {curve['n_texts']} texts, input part "
                          f"~{curve['prefix_tokens_mean']:.0f} tokens (max {curve['prefix_tokens_max']}), instruction "
                          f"parts {min(sfx)}-{max(sfx)} tokens, best of {curve['repeats']}; min cosine shared vs one "
                          f"at a time {curve['min_cosine']:.7f}", ""]
                lines += harness.table(
                    ("k", "shared s", "x k=1", "FLOPs x k=1", "naive s", "naive x k=1", "naive / shared", "of peak"),
                    [(p["k"], f"{p['shared']['best_s']:.3f}", f"{p['shared'].get('ratio_to_k1', float('nan')):.2f}",
                      f"{p['shared']['flop_ratio_to_k1']:.2f}", f"{p['naive']['best_s']:.3f}",
                      f"{p['naive'].get('ratio_to_k1', float('nan')):.2f}", f"{p['naive_over_shared']:.2f}",
                      f"{100 * p['shared']['fraction_of_peak']:.1f} %") for p in curve["points"]]) + [""]
            if "target" in curves:
                t = curves["target"]
                lines += [f"- target ({runtime}): k={t['k']} on long documents in <= {t['max_ratio']}x the time of "
                          f"k=1: {t['ratio']:.2f}x (FLOPs {t['flop_ratio']:.2f}x, naive {t['naive_ratio']:.2f}x), "
                          f"{harness.verdict(t['met'], payload['quick'])}; cosine >= {TARGET_COSINE}: "
                          f"{'yes' if t['cosine_ok'] else 'no'}", ""]
    return lines


def plot(payload: dict[str, Any]) -> Any:
    """The k curves: one row per model and runtime, long and short documents side by side."""
    rows = [(r, runtime, curves) for r in payload["runs"].values() for runtime, curves in r.get("curve", {}).items()]
    if not rows:
        return None
    fig, axes = harness.pyplot().subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), squeeze=False)
    for row, (r, runtime, curves) in enumerate(rows):
        for col, name in enumerate(("long", "short")):
            ax, points = axes[row][col], curves[name]["points"]
            ks = [p["k"] for p in points]
            shared = [p["shared"]["best_s"] for p in points]
            ax.plot(ks, [p["naive"]["best_s"] for p in points], "s--", color="C1",
                    label="naive: k calls, one instruction each")
            ax.plot(ks, shared, "o-", color="C0", label="shared: one call, k instructions")
            if ks[0] == 1:
                ax.plot(ks, [shared[0] * k for k in ks], ":", color="grey", alpha=0.7, label="k x time(k=1)")
                ax.plot(ks, [shared[0] * p["shared"]["flop_ratio_to_k1"] for p in points], "-.", color="C0",
                        alpha=0.4, label="shared, if time followed its FLOPs")
                if name == "long" and TARGET_K in ks:
                    ax.plot([TARGET_K], [TARGET_K_RATIO * shared[0]], "r_", markersize=22, mew=2,
                            label=f"target: k={TARGET_K} <= {TARGET_K_RATIO}x k=1")
            ax.set_xscale("log", base=2)
            ax.set(xticks=ks, xticklabels=[str(k) for k in ks], xlabel="instructions k", ylabel="total seconds")
            ax.set_title(f"{r['model']} ({r['device']}, {runtime}): {curves[name]['n_texts']} {name} docs, "
                         f"input ~{curves[name]['prefix_tokens_mean']:.0f} tokens", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"multi-instruction cost ({'quick' if payload['quick'] else 'full'}): one shared call vs one call "
                 "per instruction", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default="inbedder-smollm2-135m", help="built-in name, hub id or folder")
    parser.add_argument("--n-short", type=int, default=64, help="news-like texts, ~40 words (default: %(default)s)")
    parser.add_argument("--n-long", type=int, default=16, help="patent-like texts, thousands of words")
    parser.add_argument("--max-length", type=int, default=512, help="prompt tokens; long texts are cut to it")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="latency: interleaved rounds, medians count")
    parser.add_argument("--curve-repeats", type=int, default=2, help="k curve: timed runs per point")
    parser.add_argument("--gpu-rounds", type=int, default=5, help="minimum rounds and repeats on a GPU")
    parser.add_argument("--ks", default="1,2,4,8", help="instruction counts, at most 8 (default: %(default)s)")
    parser.add_argument("--runtimes", default="onnx,onnx-int8", help="latency setting, besides torch, CPU only")
    parser.add_argument("--curve-runtimes", default="torch,onnx", help="runtimes of the k curve (default: %(default)s)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of PyTorch and ONNX Runtime alike")
    parser.add_argument("--gpu-large", action="store_true", help="also an OPT-1.3b-sized random model (GPU)")
    parser.add_argument("--skip-default", action="store_true", help="with --gpu-large: only the large model")
    parser.add_argument("--skip-latency", action="store_true", help="leave out the comparison with the reference")
    parser.add_argument("--skip-curve", action="store_true", help="leave out the k curve")
    args = harness.parse(parser, argv)
    args.ks = sorted({int(k) for k in harness.names(args.ks)})
    if args.quick:
        args.n_short, args.n_long = min(args.n_short, 8), min(args.n_long, 2)
        args.max_length = min(args.max_length, 256)
        args.ks = [k for k in args.ks if k <= 4]
        args.rounds, args.curve_repeats, args.gpu_rounds = 1, 1, min(args.gpu_rounds, 2)
    if not args.ks or args.ks[0] < 1 or args.ks[-1] > len(INSTRUCTIONS):
        parser.error(f"--ks must lie in 1..{len(INSTRUCTIONS)}")
    import torch

    from inbedder_index import InBedder
    from inbedder_index.threads import set_threads

    set_threads(args.threads)
    docs = {"short": news_texts(args.n_short, args.seed), "long": patent_texts(args.n_long, args.seed)}
    started = time.perf_counter()
    runs: dict[str, Any] = {}
    if not args.skip_default:  # the reference procedure and the FLOP count read the PyTorch model
        runs["default"] = run_model("default", InBedder(args.model, device=args.device, max_length=args.max_length,
                                                        batch_size=args.batch_size, runtime="torch"), docs, args)
    skipped = None
    if args.gpu_large and not torch.cuda.is_available():
        skipped = "no GPU present (torch.cuda.is_available() is False): --gpu-large skipped"
    elif args.gpu_large:
        logger.info("building an OPT-1.3b-sized random model in bfloat16")
        device = args.device if args.device and args.device.startswith("cuda") else "cuda"
        runs["large"] = run_model("large", build_large(device, args.max_length, args.batch_size, args.seed), docs, args)
    device = [run["device"] for run in runs.values()][-1] if runs else "cpu"
    payload = {
        "settings": harness.recorded(args),
        "instructions": INSTRUCTIONS,
        "target": {"k": TARGET_K, "max_ratio_to_k1_long_docs": TARGET_K_RATIO, "min_cosine": TARGET_COSINE,
                   "gpu_fraction_of_bf16_peak": TARGET_GPU_FRACTION},
        "runs": runs, "gpu_large_skipped": skipped, "elapsed_s": round(time.perf_counter() - started, 1),
    }
    args.no_save = args.no_save or not runs
    harness.finish(args, "latency", payload, summary, figure=plot, device=device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
