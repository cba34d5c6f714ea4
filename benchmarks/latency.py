"""Latency of ``InBedder.encode`` in the paper's setting, and the cost of many instructions at once.

Three measurements, on the same model, texts and token ids throughout:

1. Latency setting (the paper's): the time to embed a batch of short news-like texts (AG-News
   sized, ~40 words, ``--n-short``, default 64) and a batch of long patent-like texts (Big-Patent
   sized, thousands of words, ``--n-long``, default 16; the prompt is cut at ``--max-length`` 512
   tokens, of which the encoder keeps 64 for the instruction: ~467-token prompts),
   with ``InBedder.encode`` and with the published reference procedure (``generate`` with
   ``max_new_tokens=3`` and ``output_hidden_states=True``, left-padded). Timed by
   ``encode_speed.measure`` (the same procedure and timing as ``encode_speed.py``: batches of
   ``--batch-size``, each batch through both procedures ``--repeats`` times interleaved, each
   batch's best run counted). Reported: seconds for the batch, texts/s, prompt tokens/s (real,
   unpadded tokens of the prompts), the speed ratio and the smallest cosine between the two.

2. Multi-instruction cost curve: total seconds to embed the same texts under k = 1, 2, 4, 8
   distinct instructions (``INSTRUCTIONS``), long documents and short ones:

   - shared: ONE call ``encode(texts, instructions[:k])``; a causal model runs each batch's input
     part once and every instruction's short suffix on top of the cached keys/values;
   - naive: k calls ``encode(texts, instruction)``, one full pass per instruction.

   At k = 1 the two are the same call (one forward pass): it is timed twice per repeat and the
   best of those is the baseline of both curves. For k > 1 the two modes run interleaved
   (alternating which goes first) ``--curve-repeats`` times, best run counted. Also recorded:
   process CPU time (with more than one torch thread it is inflated too when the cores are
   shared), and the ratio of executed FLOPs (below), which is what the time ratio would be if
   time followed the arithmetic and does not depend on machine load. Reported: time ratios to
   k = 1, and the largest cosine gap between the shared and the naive vector of each (text,
   instruction): the two must agree (cosine >= 0.9999). Target (long documents): k = 4 in at
   most 1.6x the time of k = 1, against ~4x for the naive way.

3. ``--gpu-large`` (only where ``torch.cuda.is_available()``; otherwise it says so and skips):
   both benchmarks again on an OPT-1.3b-sized ``OPTForCausalLM`` (hidden 2048, FFN 8192, 24
   layers, 32 heads) built from a config with random weights (speed does not depend on the
   weights) in bfloat16, with the default model's tokenizer (vocabulary size from it).

FLOPs: every figure carries the FLOPs its procedure executes on the real (unpadded) tokens:
2 x (matmul parameters of the backbone, embeddings excluded) per token, plus causal attention,
4 x layers x attention width per (query, key) pair; the reference also pays its two decode steps
and the LM head on its three generated positions. Achieved TFLOP/s = FLOPs / best time; on a GPU,
as a fraction of the device's bf16 dense peak: ``--peak-tflops``, else a small table keyed by
the device name (``PEAK_BF16_TFLOPS``), else 989 (H100 SXM). Padding is not credited, so this is
a "useful work" utilisation, a lower bound of what the hardware executes.

Run from the repository root::

    python benchmarks/latency.py --quick        # ~1 min on 2 cores: 8 short / 2 long, k up to 4, max_length 256
    python benchmarks/latency.py                # default model, 64 short / 16 long, max_length 512, k = 1, 2, 4, 8
    python benchmarks/latency.py --gpu-large    # also the OPT-1.3b-sized random model (GPU only)

The full CPU run pushes ~0.6M prompt tokens through the 135M model (~20 min on 2 idle cores,
at the ~500 tokens/s that ``encode_speed.py`` measures); ``--skip-latency`` / ``--skip-curve``
leave a part out. Results go to ``benchmarks/results/latency.json`` and ``latency.png`` (the
k curves); ``latency_quick.*`` for ``--quick``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    RESULTS_DIR,
    add_common_args,
    cosine_rows,
    machine_info,
    news_texts,
    patent_texts,
    save_results,
    setup_logging,
    time_call,
)
from encode_speed import TARGET_COSINE, measure, n_params, token_stats

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

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity), matched in order against the device name
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),
]
DEFAULT_PEAK_TFLOPS = 989.0  # H100 SXM

# OPT-1.3b's shape (facebook/opt-1.3b): the paper's opt-1.3b-InBedder backbone
LARGE_SHAPE: dict[str, int] = {"hidden_size": 2048, "ffn_dim": 8192, "num_hidden_layers": 24,
                               "num_attention_heads": 32}


# --------------------------------------------------------------------------- FLOPs


@dataclass(frozen=True)
class FlopModel:
    """Forward-pass FLOPs of a decoder on real tokens."""

    matmul_params: int  # 2-D weights of the backbone, token/position embeddings excluded
    n_layers: int
    attn_width: int  # query heads x head dim
    head_params: int  # LM head (vocab x hidden): paid per generated position only

    def forward(self, new: int, context: int = 0) -> float:
        """``new`` tokens after ``context`` cached ones: matmuls + causal attention (QK^T and AV)."""
        pairs = new * context + new * (new + 1) / 2
        return 2.0 * self.matmul_params * new + 4.0 * self.n_layers * self.attn_width * pairs


def flop_model(enc: Any) -> FlopModel:
    config = enc.model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    matmul = sum(p.numel() for name, p in enc._backbone.named_parameters() if p.dim() == 2 and "embed" not in name)
    head = enc.model.get_output_embeddings()
    return FlopModel(int(matmul), int(config.num_hidden_layers), int(heads * head_dim),
                     int(head.weight.numel()) if head is not None else 0)


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


def reference_work(fm: FlopModel, prefixes: list[int], suffix: int) -> Work:
    """One prefill, then ``generate``'s two decode steps, and the LM head at three positions."""
    work = single_work(fm, prefixes, suffix)
    for p in prefixes:
        length = p + suffix
        work.executed_tokens += 2
        work.flops += fm.forward(1, length) + fm.forward(1, length + 1) + 3 * 2.0 * fm.head_params
    return work


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


def peak_tflops(device: torch.device, override: float | None) -> tuple[float | None, str]:
    """The bf16 dense peak to compare against, and where it came from (None off the GPU)."""
    if device.type != "cuda":
        return None, "not a GPU"
    if override:
        return override, "--peak-tflops"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key.lower() in name.lower():
            return value, f"table ({key})"
    logger.warning("no bf16 peak known for %r: using %.0f TFLOP/s (H100 SXM); pass --peak-tflops", name,
                   DEFAULT_PEAK_TFLOPS)
    return DEFAULT_PEAK_TFLOPS, f"default (H100 SXM; {name!r} not in the table)"


def rate(work: Work, seconds: float, n_texts: int, peak: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "texts_per_s": n_texts / seconds,
        "prompt_tokens_per_s": work.prompt_tokens / seconds,
        "executed_tokens_per_s": work.executed_tokens / seconds,
        "executed_tflop": work.flops / 1e12,
        "achieved_tflops": work.flops / seconds / 1e12,
    }
    if peak:
        out["fraction_of_peak"] = out["achieved_tflops"] / peak
    return out


# --------------------------------------------------------------------------- 1. latency setting


def latency(enc: Any, fm: FlopModel, texts: list[str], instruction: str, batch_size: int, repeats: int,
            peak: float | None) -> dict[str, Any]:
    """``encode`` against the reference on one batch of texts (``encode_speed.measure``), with tokens/s and FLOPs."""
    result: dict[str, Any] = {"n_texts": len(texts), "instruction": instruction, "batch_size": batch_size,
                              "repeats": repeats, "tokens": token_stats(enc, texts, instruction, batch_size)}
    result.update(measure(enc, texts, instruction, batch_size, repeats))
    prefixes, suffixes = prompt_parts(enc, texts, [instruction])
    budget = enc.prompts.input_budget(instruction)
    result["tokens"]["inputs_truncated"] = int(sum(len(x) > budget for x in enc.prompts.input_ids(texts)))
    result["tokens"]["input_budget"] = budget
    works = {"ours": single_work(fm, prefixes[instruction], suffixes[instruction]),
             "reference": reference_work(fm, prefixes[instruction], suffixes[instruction])}
    for name, work in works.items():
        row = result[name]
        row.update(rate(work, row["best_s"], len(texts), peak))
        row["ms_per_text"] = 1000 * row["best_s"] / len(texts)
    return result


# --------------------------------------------------------------------------- 2. k curve


def _call(enc: Any, texts: list[str], instructions: list[str], mode: str, batch_size: int) -> tuple[float, float, dict[str, np.ndarray]]:
    """Wall and process-CPU seconds of one mode, and its vectors per instruction."""
    def shared() -> dict[str, np.ndarray]:
        return enc.encode(texts, instructions, batch_size=batch_size, show_progress_bar=False)

    def naive() -> dict[str, np.ndarray]:
        return {item: enc.encode(texts, item, batch_size=batch_size, show_progress_bar=False) for item in instructions}

    cpu_start = time.process_time()
    seconds, vectors = time_call(shared if mode == "shared" else naive, enc.device)
    return seconds, time.process_time() - cpu_start, vectors


def k_curve(enc: Any, fm: FlopModel, texts: list[str], ks: Sequence[int], batch_size: int, repeats: int,
            peak: float | None, label: str) -> dict[str, Any]:
    """Total time for k instructions: one shared call against k single-instruction calls."""
    instructions = INSTRUCTIONS[: max(ks)]
    enc.encode(texts[:2], instructions[:2], batch_size=batch_size, show_progress_bar=False)  # warm both paths
    enc.encode(texts[:2], instructions[0], batch_size=batch_size, show_progress_bar=False)
    wall: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m in ("shared", "naive")}
    cpu: dict[str, dict[int, list[float]]] = {m: {k: [] for k in ks} for m in ("shared", "naive")}
    gaps: dict[int, float] = {}
    load = [os.getloadavg()[0]]
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
        load.append(os.getloadavg()[0])

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
    }
    return result


# --------------------------------------------------------------------------- models


def load_default_encoder(args: argparse.Namespace) -> Any:
    from inbedder_index import InBedder

    return InBedder(args.model, device=args.device, dtype=args.dtype, max_length=args.max_length,
                    batch_size=args.batch_size)


def build_large(device: str | None, max_length: int, batch_size: int, seed: int,
                shape: dict[str, int] | None = None, dtype: torch.dtype = torch.bfloat16) -> Any:
    """An OPT-1.3b-sized ``OPTForCausalLM`` (random weights, ``dtype``) with the default model's tokenizer."""
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM

    from inbedder_index import InBedder
    from inbedder_index.models import smollm2_folder

    shape = shape or LARGE_SHAPE
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


# --------------------------------------------------------------------------- running and printing


def run_model(label: str, enc: Any, short: list[str], long: list[str], args: argparse.Namespace) -> dict[str, Any]:
    fm = flop_model(enc)
    peak, peak_source = peak_tflops(enc.device, args.peak_tflops)
    repeats = max(args.repeats, args.gpu_repeats) if enc.device.type == "cuda" else args.repeats
    curve_repeats = max(args.curve_repeats, args.gpu_repeats) if enc.device.type == "cuda" else args.curve_repeats
    result: dict[str, Any] = {
        "model": enc.model_id,
        "kind": enc.kind,
        "parameters": n_params(enc.model),
        "matmul_parameters": fm.matmul_params,
        "dtype": str(next(enc.model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(enc.model.config, "_attn_implementation", None),
        "device": str(enc.device),
        "gpu": torch.cuda.get_device_name(enc.device) if enc.device.type == "cuda" else None,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "max_length": enc.max_length,
        "max_batch_tokens": enc.max_batch_tokens,
    }
    docs = {"short": short, "long": long}
    if not args.skip_latency:
        result["latency"] = {}
        for name, texts in docs.items():
            logger.info("%s: latency setting, %d %s texts", label, len(texts), name)
            result["latency"][name] = latency(enc, fm, texts, INSTRUCTIONS[0], args.batch_size, repeats, peak)
    if not args.skip_curve:
        result["curve"] = {}
        for name in ("long", "short"):
            logger.info("%s: k curve on %d %s texts, k = %s", label, len(docs[name]), name, args.ks)
            result["curve"][name] = k_curve(enc, fm, docs[name], args.ks, args.batch_size, curve_repeats, peak,
                                            f"{label}/{name}")
        long_points = {p["k"]: p for p in result["curve"]["long"]["points"]}
        if TARGET_K in long_points and "ratio_to_k1" in long_points[TARGET_K]["shared"]:
            ratio = long_points[TARGET_K]["shared"]["ratio_to_k1"]
            result["target"] = {"k": TARGET_K, "max_ratio": TARGET_K_RATIO, "ratio": ratio,
                                "naive_ratio": long_points[TARGET_K]["naive"]["ratio_to_k1"],
                                "cpu_ratio": long_points[TARGET_K]["shared"]["cpu_ratio_to_k1"],
                                "flop_ratio": long_points[TARGET_K]["shared"]["flop_ratio_to_k1"],
                                "met": bool(ratio <= TARGET_K_RATIO),
                                "cosine_ok": bool(result["curve"]["long"]["min_cosine"] >= TARGET_COSINE
                                                  and result["curve"]["short"]["min_cosine"] >= TARGET_COSINE)}
    return result


def _flops_cells(row: dict[str, Any]) -> str:
    cell = f"{row['achieved_tflops'] * 1000:>9.1f}"
    if "fraction_of_peak" in row:
        cell += f"{100 * row['fraction_of_peak']:>7.1f}%"
    return cell


def print_model(label: str, r: dict[str, Any], quick: bool) -> None:
    gpu = f", {r['gpu']}, peak {r['peak_tflops']:.0f} TFLOP/s bf16 [{r['peak_source']}]" if r["gpu"] else ""
    print(f"\n== {label}: {r['model']} ({r['kind']}, {r['parameters'] / 1e6:.0f}M params, {r['dtype']}, "
          f"{r['attn_implementation']}) on {r['device']}{gpu}; max_length {r['max_length']}")
    peak_col = "  %peak" if r["peak_tflops"] else ""
    if "latency" in r:
        print(f"   latency setting: each batch's best of {next(iter(r['latency'].values()))['repeats']}, "
              f"interleaved with the reference")
        print(f"   {'docs':<6}{'n':>5}{'tok/text':>10}{'trunc':>7}  {'procedure':<22}{'time s':>9}{'texts/s':>9}"
              f"{'tokens/s':>10}{'ms/text':>9}{'GFLOP/s':>9}{peak_col}")
        for name, lat in r["latency"].items():
            tok = lat["tokens"]
            for position, (proc, key) in enumerate((("InBedder.encode", "ours"), ("reference (generate)", "reference"))):
                row = lat[key]
                head = (f"   {name:<6}{lat['n_texts']:>5}{tok['prompt_tokens_mean']:>10.0f}{tok['inputs_truncated']:>7}"
                        if position == 0 else " " * 31)
                print(f"{head}  {proc:<22}{row['best_s']:>9.3f}{row['texts_per_s']:>9.2f}"
                      f"{row['prompt_tokens_per_s']:>10.0f}{row['ms_per_text']:>9.1f}{_flops_cells(row)}")
            print(f"   {'':<28}speed ratio {lat['ratio']:.2f}x (median {lat['ratio_median']:.2f}x), "
                  f"min cosine vs reference {lat['min_cosine']:.7f}")
    if "curve" in r:
        for name, curve in r["curve"].items():
            print(f"   k curve, {name} docs: {curve['n_texts']} texts, input part mean {curve['prefix_tokens_mean']:.0f} "
                  f"tokens (max {curve['prefix_tokens_max']}), instruction parts "
                  f"{min(curve['suffix_tokens'].values())}-{max(curve['suffix_tokens'].values())} tokens, "
                  f"{curve['instruction_groups']} group(s), best of {curve['repeats']}")
            print(f"     {'k':>3}{'shared s':>10}{'x k=1':>8}{'(cpu)':>7}{'(flop)':>7}{'naive s':>10}{'x k=1':>8}{'(cpu)':>7}"
                  f"{'naive/shared':>13}{'emb/s sh':>10}{'GFLOP/s sh':>11}{peak_col}{'1-cos':>10}")
            for p in curve["points"]:
                sh, nv = p["shared"], p["naive"]
                print(f"     {p['k']:>3}{sh['best_s']:>10.3f}{sh.get('ratio_to_k1', float('nan')):>8.2f}"
                      f"{sh.get('cpu_ratio_to_k1', float('nan')):>7.2f}{sh['flop_ratio_to_k1']:>7.2f}{nv['best_s']:>10.3f}"
                      f"{nv.get('ratio_to_k1', float('nan')):>8.2f}{nv.get('cpu_ratio_to_k1', float('nan')):>7.2f}"
                      f"{p['naive_over_shared']:>13.2f}{sh['embeddings_per_s']:>10.1f}{_flops_cells(sh)}"
                      f"{p['max_cosine_gap']:>10.1e}")
            load = curve["load_average_1m"]
            busy = load["max"] > (os.cpu_count() or 1) + 0.5 and r["device"] == "cpu"
            print(f"     min cosine shared vs naive {curve['min_cosine']:.7f} "
                  f"({'OK' if curve['min_cosine'] >= TARGET_COSINE else 'BELOW'} {TARGET_COSINE}); load average "
                  f"{load['min']:.1f}-{load['max']:.1f}" + ("  (shared machine: figures are noisy)" if busy else ""))
    if "target" in r:
        t = r["target"]
        caveat = "  (quick run: too small to judge)" if quick else ""
        print(f"   target: k={t['k']} on long docs in <= {t['max_ratio']}x the time of k=1: shared {t['ratio']:.2f}x "
              f"(cpu time {t['cpu_ratio']:.2f}x, executed FLOPs {t['flop_ratio']:.2f}x; naive {t['naive_ratio']:.2f}x): "
              f"{'MET' if t['met'] else 'NOT MET'}; "
              f"cosine >= {TARGET_COSINE}: {'yes' if t['cosine_ok'] else 'NO'}{caveat}")


def plot(runs: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label, r) for label, r in runs.items() if "curve" in r]
    if not rows:
        return
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), squeeze=False)
    for row, (label, r) in enumerate(rows):
        for col, name in enumerate(("long", "short")):
            ax = axes[row][col]
            curve = r["curve"][name]
            ks = [p["k"] for p in curve["points"]]
            shared = [p["shared"]["best_s"] for p in curve["points"]]
            naive = [p["naive"]["best_s"] for p in curve["points"]]
            ax.plot(ks, naive, "s--", color="C1", label="naive: k calls, one instruction each")
            ax.plot(ks, shared, "o-", color="C0", label="shared: one call, k instructions")
            if ks[0] == 1:
                ax.plot(ks, [shared[0] * k for k in ks], ":", color="grey", alpha=0.7, label="k x time(k=1)")
                ax.plot(ks, [shared[0] * p["shared"]["flop_ratio_to_k1"] for p in curve["points"]], "-.", color="C0",
                        alpha=0.4, label="shared, if time followed its FLOPs")
                if name == "long" and TARGET_K in ks:
                    ax.plot([TARGET_K], [TARGET_K_RATIO * shared[0]], "r_", markersize=22, mew=2,
                            label=f"target: k={TARGET_K} <= {TARGET_K_RATIO}x k=1")
                for k, s in zip(ks, shared):
                    ax.annotate(f"{s / shared[0]:.2f}x", (k, s), textcoords="offset points", xytext=(4, -12), fontsize=8,
                                color="C0")
            ax.set_xscale("log", base=2)
            ax.set_xticks(ks)
            ax.set_xticklabels([str(k) for k in ks])
            ax.set_xlabel("instructions k")
            ax.set_ylabel("total seconds")
            ax.set_title(f"{r['model']} ({r['device']}): {curve['n_texts']} {name} docs, "
                         f"input ~{curve['prefix_tokens_mean']:.0f} tokens", fontsize=9)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, hub id or folder (default: %(default)s)")
    parser.add_argument("--n-short", type=int, default=64, help="news-like texts, ~40 words (default: %(default)s)")
    parser.add_argument("--n-long", type=int, default=16, help="patent-like texts, thousands of words (default: %(default)s)")
    parser.add_argument("--max-length", type=int, default=512, help="prompt tokens; long texts are cut to it (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="latency: timed runs per batch, best counts (default: %(default)s)")
    parser.add_argument("--curve-repeats", type=int, default=2, help="k curve: timed runs per point (default: %(default)s)")
    parser.add_argument("--gpu-repeats", type=int, default=5, help="minimum repeats of both on a GPU (default: %(default)s)")
    parser.add_argument("--ks", default="1,2,4,8", help="instruction counts, at most 8 (default: %(default)s)")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default model's dtype (default: float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--gpu-large", action="store_true", help="also an OPT-1.3b-sized random model in bf16 (GPU only)")
    parser.add_argument("--skip-default", action="store_true", help="with --gpu-large: only the large model")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="GPU bf16 dense peak, TFLOP/s (default: by device name, else 989 = H100 SXM)")
    parser.add_argument("--skip-latency", action="store_true", help="leave out the comparison with the reference")
    parser.add_argument("--skip-curve", action="store_true", help="leave out the k curve")
    parser.add_argument("--out", default=None, help="results name (default: latency, or latency_quick)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.ks = sorted({int(k) for k in args.ks.split(",")})
    if args.quick:
        args.n_short, args.n_long = min(args.n_short, 8), min(args.n_long, 2)
        args.max_length = min(args.max_length, 256)
        args.ks = [k for k in args.ks if k <= 4]
        args.repeats, args.curve_repeats, args.gpu_repeats = 1, 1, min(args.gpu_repeats, 2)
    if not args.ks or args.ks[0] < 1 or args.ks[-1] > len(INSTRUCTIONS):
        parser.error(f"--ks must lie in 1..{len(INSTRUCTIONS)}")
    setup_logging(args.verbose)
    if args.threads:
        torch.set_num_threads(args.threads)

    short = news_texts(args.n_short, args.seed)
    long = patent_texts(args.n_long, args.seed)
    started = time.perf_counter()
    runs: dict[str, Any] = {}
    device = None
    if not args.skip_default:
        enc = load_default_encoder(args)
        device = enc.device
        runs["default"] = run_model("default", enc, short, long, args)
        del enc
    skipped = None
    if args.gpu_large:
        if not torch.cuda.is_available():
            skipped = "no GPU present (torch.cuda.is_available() is False): --gpu-large skipped"
            print(f"\n{skipped}")
        else:
            logger.info("building an OPT-1.3b-sized random model in bfloat16")
            gpu = args.device if args.device and args.device.startswith("cuda") else "cuda"
            enc = build_large(gpu, args.max_length, args.batch_size, args.seed)
            device = enc.device
            runs["large"] = run_model("large", enc, short, long, args)
            del enc
            torch.cuda.empty_cache()

    info = machine_info(device or "cpu")
    kind = "quick" if args.quick else "full"
    print(f"\nlatency ({kind}), {info['cpu_model']}, {torch.get_num_threads()} torch threads, "
          f"load average {info['load_average_1m']:.1f}" + (f", {info['gpu']}" if "gpu" in info else ""))
    for label, result in runs.items():
        print_model(label, result, args.quick)
    elapsed = time.perf_counter() - started
    print(f"\n(total {elapsed:.0f} s)")

    if not args.no_save and runs:
        name = args.out or ("latency_quick" if args.quick else "latency")
        payload = {
            "quick": args.quick,
            "machine": info,
            "settings": {k: v for k, v in vars(args).items() if k not in {"no_save", "verbose"}},
            "instructions": INSTRUCTIONS,
            "target": {"k": TARGET_K, "max_ratio_to_k1_long_docs": TARGET_K_RATIO, "min_cosine": TARGET_COSINE},
            "runs": runs,
            "gpu_large_skipped": skipped,
            "elapsed_s": round(elapsed, 1),
        }
        path = save_results(name, payload)
        png = RESULTS_DIR / f"{name}.png"
        busy = f", load average {info['load_average_1m']:.1f} on {os.cpu_count()} cores" if args.quick else ""
        plot(runs, png, f"multi-instruction cost ({kind}{busy}): one shared call vs one call per instruction")
        logger.info("saved %s and %s", path, png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
