"""Latency of ``InBedder.encode`` in the paper's setting, and the cost of many instructions at once.

1. Latency setting (the paper's): short news-like texts (~40 words, ``--n-short``) and long
   patent-like texts (cut at ``--max-length`` 512 tokens) through the reference procedure and
   ``encode`` on each runtime, side by side (``procedures.compare_procedures``).
2. Multi-instruction cost curve, per runtime (``--curve-runtimes``): the time to embed the same
   texts under k = 1, 2, 4, 8 instructions in one shared call ``encode(texts, instructions[:k])``
   (a causal model runs each input part once and each instruction's suffix on the cached
   keys/values) against k single-instruction calls; the ratio of executed FLOPs and the largest
   cosine gap between the two (>= 0.9999). Target (long documents): k = 4 in <= 1.6x the time of k = 1.
3. ``--gpu-large`` (CUDA only; otherwise it says so): both on an OPT-1.3b-sized random
   ``OPTForCausalLM`` in bf16, with the fraction of the measured and the datasheet bf16 peak.

    python -m benchmarks.latency --quick        # 8 short / 2 long, k up to 4, max_length 256
    python -m benchmarks.latency                # default model, 64 short / 16 long, k = 1, 2, 4, 8
    python -m benchmarks.latency --gpu-large    # also the OPT-1.3b-sized random model (GPU only)
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import harness
from .harness import cosine_rows, load_average, time_call
from .procedures import FlopModel, compare_procedures, comparison_lines, matmul_peak_gflops, runtime_encoders
from .texts import news_texts, patent_texts

logger = logging.getLogger("benchmarks.latency")

INSTRUCTIONS = [
    "What is the topic of this text?",
    "Where does this take place?",
    "What is the sentiment of this text?",
    "Which organisation is mentioned in this text?",
    "Who is the main person or actor in this text?",
    "What problem does this text describe?",
    "When does this happen?",
    "What type of document is this?",
]

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


@dataclass
class Work:
    """What a set of texts costs under some instructions: executed tokens and FLOPs, unpadded."""

    prompt_tokens: int = 0  # tokens of the full prompts (one per instruction): the naive way's work
    executed_tokens: int = 0
    flops: float = 0.0


def prompt_parts(enc: Any, texts: list[str], instructions: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per instruction: each text's prefix length (input part, truncated to that instruction's budget),
    and the instruction's suffix length."""
    ids = enc.prompts.input_ids(texts)
    budgets = {item: enc.prompts.input_budget(item) for item in instructions}
    by_budget = {b: [len(enc.prompts.prefix(x, b)) for x in ids] for b in set(budgets.values())}
    prefixes = {item: by_budget[budgets[item]] for item in instructions}
    suffixes = {item: len(enc.prompts.suffix(item)) for item in instructions}
    return prefixes, suffixes


def single_work(fm: FlopModel, prefixes: list[int], suffix: int) -> Work:
    lengths = [p + suffix for p in prefixes]
    return Work(sum(lengths), sum(lengths), sum(fm.forward(n) for n in lengths))


def shared_work(enc: Any, fm: FlopModel, prefixes: dict[str, list[int]], suffixes: dict[str, int],
                instructions: Sequence[str]) -> Work:
    """What ``encode(texts, instructions)`` executes: per group of instructions with the same input
    budget, the prefixes once and each suffix on top (one plain pass for a group of one)."""
    groups: dict[int, list[str]] = {}
    for item in instructions:
        groups.setdefault(enc.prompts.input_budget(item), []).append(item)
    work = Work()
    for members in groups.values():
        pre = prefixes[members[0]]
        if len(members) == 1 or enc.kind != "causal":
            for item in members:
                one = single_work(fm, pre, suffixes[item])
                work.executed_tokens += one.executed_tokens
                work.flops += one.flops
        else:
            work.executed_tokens += sum(pre)
            work.flops += sum(fm.forward(p) for p in pre)
            for item in members:
                work.executed_tokens += suffixes[item] * len(pre)
                work.flops += sum(fm.forward(suffixes[item], p) for p in pre)
    work.prompt_tokens = sum(sum(prefixes[item]) + suffixes[item] * len(prefixes[item]) for item in instructions)
    return work


def naive_work(fm: FlopModel, prefixes: dict[str, list[int]], suffixes: dict[str, int],
               instructions: Sequence[str]) -> Work:
    work = Work()
    for item in instructions:
        one = single_work(fm, prefixes[item], suffixes[item])
        work.prompt_tokens += one.prompt_tokens
        work.executed_tokens += one.executed_tokens
        work.flops += one.flops
    return work


def datasheet_peak_tflops(device: Any) -> float | None:
    if not str(device).startswith("cuda"):
        return None
    import torch

    name = torch.cuda.get_device_name(device).lower()
    return next((value for key, value in PEAK_BF16_TFLOPS if key.lower() in name), None)


def rate(work: Work, seconds: float, n_texts: int, peak_gflops: float) -> dict[str, Any]:
    return {
        "texts_per_s": n_texts / seconds,
        "prompt_tokens_per_s": work.prompt_tokens / seconds,
        "executed_tokens_per_s": work.executed_tokens / seconds,
        "executed_tflop": work.flops / 1e12,
        "achieved_tflops": work.flops / seconds / 1e12,
        "fraction_of_peak": work.flops / seconds / 1e9 / peak_gflops,
    }


def _call(enc: Any, texts: list[str], instructions: list[str], mode: str, batch_size: int) -> tuple[float, float, dict[str, np.ndarray]]:
    """Wall and process-CPU seconds of one mode, and its vectors per instruction."""
    def shared() -> dict[str, np.ndarray]:
        return enc.encode(texts, instructions, batch_size=batch_size, show_progress_bar=False)

    def naive() -> dict[str, np.ndarray]:
        return {item: enc.encode(texts, item, batch_size=batch_size, show_progress_bar=False) for item in instructions}

    cpu_start = time.process_time()
    seconds, vectors = time_call(shared if mode == "shared" else naive, enc.device)
    return seconds, time.process_time() - cpu_start, vectors


def k_curve(enc: Any, texts: list[str], ks: Sequence[int], batch_size: int, repeats: int, label: str) -> dict[str, Any]:
    """Total time for k instructions: one shared call against k single-instruction calls (the
    matmul peak is measured after every repeat, beside them)."""
    fm = FlopModel(enc)
    peaks = []
    instructions = INSTRUCTIONS[: max(ks)]
    enc.encode(texts[:2], instructions[:2], batch_size=batch_size, show_progress_bar=False)  # warm both paths
    enc.encode(texts[:2], instructions[0], batch_size=batch_size, show_progress_bar=False)
    wall: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m in ("shared", "naive")}
    cpu: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m in ("shared", "naive")}
    gaps: dict[int, float] = {}
    load = [load_average()]
    for repeat in range(repeats):
        for position, k in enumerate(ks):
            subset = instructions[:k]
            order = ["shared", "naive"] if (repeat + position) % 2 == 0 else ["naive", "shared"]
            out: dict[str, dict[str, np.ndarray]] = {}
            for mode in order:  # at k = 1 both are the same call (one forward pass): two samples of the baseline
                seconds, cpu_s, out[mode] = _call(enc, texts, subset, mode, batch_size)
                wall[mode][k].append(seconds)
                cpu[mode][k].append(cpu_s)
            gap = max(float(1.0 - cosine_rows(out["shared"][item], out["naive"][item]).min()) for item in subset)
            gaps[k] = max(gaps.get(k, 0.0), gap)
            logger.info("%s k=%d: shared %.2f s, naive %.2f s, max 1-cos %.1e", label, k, wall["shared"][k][-1],
                        wall["naive"][k][-1], gap)
        load.append(load_average())
        peaks.append(matmul_peak_gflops(enc.device))

    peak = statistics.median(peaks)
    prefixes, suffixes = prompt_parts(enc, texts, instructions)
    base = min(wall["shared"][1] + wall["naive"][1]) if ks[0] == 1 else None
    base_cpu = min(cpu["shared"][1] + cpu["naive"][1]) if ks[0] == 1 else None
    base_flops = single_work(fm, prefixes[instructions[0]], suffixes[instructions[0]]).flops
    points = []
    for k in ks:
        subset = instructions[:k]
        works = {"shared": shared_work(enc, fm, prefixes, suffixes, subset), "naive": naive_work(fm, prefixes, suffixes, subset)}
        point: dict[str, Any] = {"k": k, "max_cosine_gap": gaps[k]}
        for mode, work in works.items():
            best = base if k == 1 and base else min(wall[mode][k])
            row = {"best_s": best, "median_s": float(np.median(wall[mode][k])), "all_s": [round(s, 4) for s in wall[mode][k]],
                   "cpu_best_s": base_cpu if k == 1 and base_cpu else min(cpu[mode][k]), "prompt_tokens": work.prompt_tokens,
                   "executed_tokens": work.executed_tokens}
            row.update(rate(work, best, len(texts) * k, peak))
            row["embeddings_per_s"] = row.pop("texts_per_s")  # texts x instructions
            row["flop_ratio_to_k1"] = work.flops / base_flops  # the work's own ratio: free of machine load
            if base:
                row["ratio_to_k1"] = best / base
                row["cpu_ratio_to_k1"] = row["cpu_best_s"] / base_cpu
            point[mode] = row
        point["naive_over_shared"] = point["naive"]["best_s"] / point["shared"]["best_s"]
        points.append(point)

    groups = len({enc.prompts.input_budget(item) for item in instructions})
    flat_prefixes = prefixes[instructions[0]]
    result: dict[str, Any] = {
        "n_texts": len(texts),
        "instructions": instructions,
        "ks": list(ks),
        "repeats": repeats,
        "batch_size": batch_size,
        "prefix_tokens_mean": float(np.mean(flat_prefixes)),
        "prefix_tokens_max": int(max(flat_prefixes)),
        "suffix_tokens": {item: suffixes[item] for item in instructions},
        "instruction_groups": groups,  # 1: every instruction shares one input part per text
        "points": points,
        "max_cosine_gap": max(gaps.values()),
        "min_cosine": 1.0 - max(gaps.values()),
        "load_average_1m": {"min": min(load), "max": max(load)},
        "peak_gflops": peak,
    }
    return result


def build_large(device: str | None, max_length: int, batch_size: int, seed: int,
                shape: dict[str, int] | None = None, dtype: Any = None) -> Any:
    """An OPT-1.3b-sized ``OPTForCausalLM`` (random weights, ``dtype``: bf16 by default) with the default
    model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from inbedder_index import InBedder
    from inbedder_index.models import smollm2_folder

    shape = shape or LARGE_SHAPE
    dtype = dtype or torch.bfloat16
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = OPTConfig(
        vocab_size=len(tokenizer), word_embed_proj_dim=shape["hidden_size"], max_position_embeddings=2048,
        do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        architectures=["OPTForCausalLM"], **shape,
    )
    torch.manual_seed(seed)
    target = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with target:  # built in place, in the target dtype: no 5 GB float32 copy on the host
            model = OPTForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return InBedder.from_model(model.eval(), tokenizer, model_id="opt-1.3b-sized-random", device=target,
                               max_length=max_length, batch_size=batch_size)


def run_model(label: str, enc: Any, short: list[str], long: list[str], args: argparse.Namespace) -> dict[str, Any]:
    import torch

    gpu = str(enc.device).startswith("cuda")
    rounds = max(args.rounds, args.gpu_rounds) if gpu else args.rounds
    curve_repeats = max(args.curve_repeats, args.gpu_rounds) if gpu else args.curve_repeats
    runtimes = [] if gpu else [r for r in args.runtimes.split(",") if r]
    encoders = runtime_encoders(enc, runtimes)
    result: dict[str, Any] = {
        "model": enc.model_id, "kind": enc.kind, "parameters": sum(p.numel() for p in enc.model.parameters()),
        "matmul_parameters": FlopModel(enc).matmul_params,
        "dtype": str(next(enc.model.parameters()).dtype).replace("torch.", ""), "device": str(enc.device),
        "gpu": torch.cuda.get_device_name(enc.device) if gpu else None,
        "datasheet_peak_tflops": datasheet_peak_tflops(enc.device), "max_length": enc.max_length,
        "max_batch_tokens": enc.max_batch_tokens,
    }
    docs = {"short": short, "long": long}
    if not args.skip_latency:
        result["latency"] = {}
        for name, texts in docs.items():
            logger.info("%s: latency setting, %d %s texts", label, len(texts), name)
            result["latency"][name] = compare_procedures(encoders, texts, INSTRUCTIONS[0], args.batch_size, rounds)
    if not args.skip_curve:
        result["curve"] = {}
        for runtime in [r for r in args.curve_runtimes.split(",") if r in encoders]:
            curves = result["curve"][runtime] = {}
            for name in ("long", "short"):
                logger.info("%s/%s: k curve on %d %s texts, k = %s", label, runtime, len(docs[name]), name, args.ks)
                curves[name] = k_curve(encoders[runtime], docs[name], args.ks, args.batch_size, curve_repeats,
                                       f"{label}/{runtime}/{name}")
            long_points = {p["k"]: p for p in curves["long"]["points"]}
            if TARGET_K in long_points and "ratio_to_k1" in long_points[TARGET_K]["shared"]:
                ratio = long_points[TARGET_K]["shared"]["ratio_to_k1"]
                curves["target"] = {"k": TARGET_K, "max_ratio": TARGET_K_RATIO, "ratio": ratio,
                                    "naive_ratio": long_points[TARGET_K]["naive"]["ratio_to_k1"],
                                    "flop_ratio": long_points[TARGET_K]["shared"]["flop_ratio_to_k1"],
                                    "met": bool(ratio <= TARGET_K_RATIO),
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
            ax.plot(ks, [p["naive"]["best_s"] for p in points], "s--", color="C1", label="naive: k calls, one instruction each")
            ax.plot(ks, shared, "o-", color="C0", label="shared: one call, k instructions")
            if ks[0] == 1:
                ax.plot(ks, [shared[0] * k for k in ks], ":", color="grey", alpha=0.7, label="k x time(k=1)")
                ax.plot(ks, [shared[0] * p["shared"]["flop_ratio_to_k1"] for p in points], "-.", color="C0",
                        alpha=0.4, label="shared, if time followed its FLOPs")
                if name == "long" and TARGET_K in ks:
                    ax.plot([TARGET_K], [TARGET_K_RATIO * shared[0]], "r_", markersize=22, mew=2,
                            label=f"target: k={TARGET_K} <= {TARGET_K_RATIO}x k=1")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.set_xlabel("instructions k")
            ax.set_ylabel("total seconds")
            ax.set_title(f"{r['model']} ({r['device']}, {runtime}): {curves[name]['n_texts']} {name} docs, "
                         f"input ~{curves[name]['prefix_tokens_mean']:.0f} tokens", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(f"multi-instruction cost ({'quick' if payload['quick'] else 'full'}): one shared call vs one call "
                 "per instruction", fontsize=10)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--model", default="inbedder-smollm2-135m", help="built-in name, hub id or folder (default: %(default)s)")
    parser.add_argument("--n-short", type=int, default=64, help="news-like texts, ~40 words (default: %(default)s)")
    parser.add_argument("--n-long", type=int, default=16, help="patent-like texts, thousands of words (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=512, help="prompt tokens; long texts are cut to it (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="latency: interleaved rounds, medians count (default: %(default)s)")
    parser.add_argument("--curve-repeats", type=int, default=2, help="k curve: timed runs per point (default: %(default)s)")
    parser.add_argument("--gpu-rounds", type=int, default=5, help="minimum rounds and repeats on a GPU (default: %(default)s)")
    parser.add_argument("--ks", default="1,2,4,8", help="instruction counts, at most 8 (default: %(default)s)")
    parser.add_argument("--runtimes", default="onnx,onnx-int8", help="latency setting, besides torch, CPU only (default: %(default)s)")
    parser.add_argument("--curve-runtimes", default="torch,onnx", help="runtimes of the k curve (default: %(default)s)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (ONNX Runtime follows it)")
    parser.add_argument("--gpu-large", action="store_true", help="also an OPT-1.3b-sized random model in bf16 (GPU only)")
    parser.add_argument("--skip-default", action="store_true", help="with --gpu-large: only the large model")
    parser.add_argument("--skip-latency", action="store_true", help="leave out the comparison with the reference")
    parser.add_argument("--skip-curve", action="store_true", help="leave out the k curve")
    parser.add_argument("--out", default=None, help="results name (default: latency, or latency_quick)")
    args = harness.parse(parser, argv)
    args.ks = sorted({int(k) for k in args.ks.split(",")})
    if args.quick:
        args.n_short, args.n_long = min(args.n_short, 8), min(args.n_long, 2)
        args.max_length = min(args.max_length, 256)
        args.ks = [k for k in args.ks if k <= 4]
        args.rounds, args.curve_repeats, args.gpu_rounds = 1, 1, min(args.gpu_rounds, 2)
    if not args.ks or args.ks[0] < 1 or args.ks[-1] > len(INSTRUCTIONS):
        parser.error(f"--ks must lie in 1..{len(INSTRUCTIONS)}")
    import torch

    from inbedder_index import InBedder

    if args.threads:
        torch.set_num_threads(args.threads)
    short = news_texts(args.n_short, args.seed)
    long = patent_texts(args.n_long, args.seed)
    started = time.perf_counter()
    runs: dict[str, Any] = {}
    device = None
    if not args.skip_default:
        enc = InBedder(args.model, device=args.device, max_length=args.max_length, batch_size=args.batch_size,
                       runtime="torch")  # the reference procedure and the FLOP count read the PyTorch model
        device = enc.device
        runs["default"] = run_model("default", enc, short, long, args)
        del enc
    skipped = None
    if args.gpu_large:
        if not torch.cuda.is_available():
            skipped = "no GPU present (torch.cuda.is_available() is False): --gpu-large skipped"
        else:
            logger.info("building an OPT-1.3b-sized random model in bfloat16")
            enc = build_large(args.device if args.device and args.device.startswith("cuda") else "cuda",
                              args.max_length, args.batch_size, args.seed)
            device = enc.device
            runs["large"] = run_model("large", enc, short, long, args)
            del enc
            torch.cuda.empty_cache()
    payload = {
        "quick": args.quick, "machine": harness.machine_info(device or "cpu"),
        "settings": {k: v for k, v in vars(args).items() if k not in {"no_save", "verbose"}},
        "instructions": INSTRUCTIONS,
        "target": {"k": TARGET_K, "max_ratio_to_k1_long_docs": TARGET_K_RATIO, "min_cosine": TARGET_COSINE,
                   "gpu_fraction_of_bf16_peak": TARGET_GPU_FRACTION},
        "runs": runs, "gpu_large_skipped": skipped, "elapsed_s": round(time.perf_counter() - started, 1),
    }
    harness.finish(args.out or ("latency_quick" if args.quick else "latency"), payload, summary,
                   save=not args.no_save and bool(runs), figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
