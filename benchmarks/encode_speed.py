"""Texts per second of ``InBedder.encode`` against the published reference procedure.

Both procedures run on the same model, the same texts, the same batch size and the SAME TOKEN
IDS, so the comparison isolates the procedure:

- ours: ``InBedder.encode`` as a user calls it (prompt tokenisation, length-sorted right-padded
  batches, one forward pass of the backbone, pooling, normalisation).
- causal reference (InBedder's ``CausalLMEncoder.encode``): batches of the length-sorted prompts,
  padded on the LEFT, through ``model.generate(input_ids, attention_mask, max_new_tokens=3,
  do_sample=False, output_hidden_states=True, return_dict_in_generate=True)``; the vector is the
  first step's last-layer state at the last position, ``out.hidden_states[0][-1][:, -1, :]``.
- masked reference (InBedder's ``MaskedLMEncoder.encode``): the full masked-LM forward with
  ``output_hidden_states=True`` (every layer's hidden states and the vocabulary logits at every
  position are computed), right-padded; the vector is the mean of the last layer at the mask slots.

Token ids: the reference tokenises the whole prompt STRING with ``truncation_side="left"``; here
it is fed ``enc.prompts.build(text, instruction).ids`` instead (built inside the timed region, so
both procedures pay the same tokenisation). On untruncated inputs the two give the same ids; on a
truncated input the reference would cut the instruction's left context differently, which only
changes which tokens are fed, not the cost of the procedure. The reference sorts by character
length; sorting by token length here gives the same batches as ``encode`` (same padding waste).

The published code is, if anything, slower than the reference timed here: by default it also
aggregates every layer (not only the last) with per-row Python loops, asks for
``output_scores=True`` and decodes the generations. None of that is timed here.

Timing: batch by batch (the length-sorted prompts cut into runs of ``--batch-size``; the same
batches for both procedures), each batch through each procedure ``--repeats`` times, interleaved,
the best run of each batch counted; texts/s = texts / sum of the batches' best times. Each timed
call is a complete call (``encode`` on that batch's texts), so the sum is the work of one call on
all texts; per-batch interleaving keeps the ratio honest on a machine shared with other jobs,
where a best-of-N over whole passes is not. One batch of each procedure runs first, untimed.
``--profile`` adds matmul FLOPs from ``torch.profiler``, which do not depend on machine load.

Run from the repository root::

    python benchmarks/encode_speed.py --quick          # seconds: checks that everything works
    python benchmarks/encode_speed.py                  # the default model, 256 texts, batch 32
    python benchmarks/encode_speed.py --masked-tiny    # also a roberta-base-sized random MLM
    python benchmarks/encode_speed.py --n 64 --repeats 1 --breakdown --profile --out encode_speed_profile

Results go to ``benchmarks/results/encode_speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    INSTRUCTIONS,
    add_common_args,
    cosine_rows,
    machine_info,
    mixed_texts,
    save_results,
    setup_logging,
    sync,
    time_call,
)

logger = logging.getLogger("benchmarks.encode_speed")

TARGET_RATIO = 2.5
TARGET_COSINE = 0.9999


# --------------------------------------------------------------------------- the reference procedure


def _sorted_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted longest first, cut into consecutive chunks of ``batch_size`` (as the reference does)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _pad(sequences: Sequence[Sequence[int]], pad_id: int, side: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


@torch.inference_mode()
def reference_causal_batch(model: Any, ids: torch.Tensor, mask: torch.Tensor, pad_id: int) -> torch.Tensor:
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=3,
        do_sample=False,
        output_hidden_states=True,
        return_dict_in_generate=True,
        pad_token_id=pad_id,
    )
    return out.hidden_states[0][-1][:, -1, :]


@torch.inference_mode()
def reference_masked_batch(model: Any, ids: torch.Tensor, mask: torch.Tensor, mask_id: int) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, return_dict=True)
    _ = out.logits  # computed at every position by the full MLM forward
    hidden = out.hidden_states[-1]
    slots = (ids == mask_id).to(hidden.dtype)[:, :, None]
    return (hidden * slots).sum(dim=1) / slots.sum(dim=1)


def reference_encode(enc: Any, texts: Sequence[str], instruction: str, batch_size: int) -> np.ndarray:
    """The reference procedure over ``texts`` (input order out), fed ``enc``'s prompt ids."""
    prompts = [p.ids for p in enc.prompts.build_many(list(texts), instruction)]
    vectors = np.empty((len(prompts), enc.dim), dtype=np.float32)
    for chunk in _sorted_chunks([len(p) for p in prompts], batch_size):
        batch = [prompts[i] for i in chunk]
        if enc.kind == "masked":
            ids, mask = _pad(batch, enc._pad_id, "right", enc.device)
            pooled = reference_masked_batch(enc.model, ids, mask, enc.tokenizer.mask_token_id)
        else:
            ids, mask = _pad(batch, enc._pad_id, "left", enc.device)
            pooled = reference_causal_batch(enc.model, ids, mask, enc._pad_id)
        vectors[chunk] = pooled.float().cpu().numpy()
    return vectors


def ours_encode(enc: Any, texts: Sequence[str], instruction: str, batch_size: int) -> np.ndarray:
    return enc.encode(list(texts), instruction, batch_size=batch_size, show_progress_bar=False)


# --------------------------------------------------------------------------- measuring


def measure(enc: Any, texts: list[str], instruction: str, batch_size: int, repeats: int) -> dict[str, Any]:
    """Time both procedures batch by batch, interleaved, best of ``repeats`` per batch, summed.

    The batches are the reference's (and ``encode``'s): the length-sorted prompts cut into runs of
    ``batch_size``. Each timed call is a complete call of the procedure on that batch's texts
    (``encode`` tokenises, plans, pads, runs, pools and normalises them), so the sum over batches
    is the work of one call on all texts. Interleaving per batch (alternating which procedure goes
    first) and keeping each batch's best run makes the ratio robust to other processes on shared
    cores, which a best-of-N over whole passes is not. One batch of each is run first, untimed.
    """
    device = enc.device
    lengths = [len(p) for p in enc.prompts.build_many(texts, instruction)]
    chunks = _sorted_chunks(lengths, batch_size)
    procedures: dict[str, Callable[[list[str]], np.ndarray]] = {
        "ours": lambda batch: ours_encode(enc, batch, instruction, batch_size),
        "reference": lambda batch: reference_encode(enc, batch, instruction, batch_size),
    }
    warm = [texts[i] for i in chunks[-1]]
    logger.info("warm-up: one batch of %d texts through each procedure", len(warm))
    for fn in procedures.values():
        fn(warm)

    wall: dict[str, list[list[float]]] = {name: [] for name in procedures}
    cpu: dict[str, list[list[float]]] = {name: [] for name in procedures}
    vectors = {name: np.empty((len(texts), enc.dim), dtype=np.float32) for name in procedures}
    load = [os.getloadavg()[0]]
    for number, chunk in enumerate(chunks):
        batch = [texts[i] for i in chunk]
        for name in procedures:
            wall[name].append([])
            cpu[name].append([])
        for repeat in range(repeats):
            order = ["ours", "reference"] if (number + repeat) % 2 == 0 else ["reference", "ours"]
            for name in order:
                cpu_start = time.process_time()
                seconds, out = time_call(lambda fn=procedures[name], texts=batch: fn(texts), device)
                cpu[name][-1].append(time.process_time() - cpu_start)
                wall[name][-1].append(seconds)
                vectors[name][chunk] = out
        logger.info("batch %d/%d (%d texts, width %d): ours best %.2f s, reference best %.2f s", number + 1,
                    len(chunks), len(chunk), max(lengths[i] for i in chunk), min(wall["ours"][-1]),
                    min(wall["reference"][-1]))
        load.append(os.getloadavg()[0])

    result: dict[str, Any] = {}
    for name in procedures:
        best = sum(min(runs) for runs in wall[name])
        median = sum(float(np.median(runs)) for runs in wall[name])
        result[name] = {
            "best_s": best,
            "median_s": median,
            "texts_per_s": len(texts) / best,
            "texts_per_s_median": len(texts) / median,
            "cpu_best_s": sum(min(runs) for runs in cpu[name]),
            "per_batch_best_s": [round(min(runs), 4) for runs in wall[name]],
        }
    cosines = cosine_rows(vectors["ours"], vectors["reference"])
    result.update({
        "ratio": result["reference"]["best_s"] / result["ours"]["best_s"],
        "ratio_median": result["reference"]["median_s"] / result["ours"]["median_s"],
        "ratio_cpu": result["reference"]["cpu_best_s"] / result["ours"]["cpu_best_s"],
        "min_cosine": float(cosines.min()),
        "max_cosine_gap": float(1.0 - cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "load_average_1m": {"min": min(load), "max": max(load), "mean": float(np.mean(load))},
    })
    return result


def token_stats(enc: Any, texts: list[str], instruction: str, batch_size: int) -> dict[str, Any]:
    lengths = [len(p) for p in enc.prompts.build_many(texts, instruction)]
    chunks = _sorted_chunks(lengths, batch_size)
    padded = sum(len(c) * max(lengths[i] for i in c) for c in chunks)
    return {
        "prompt_tokens_total": int(sum(lengths)),
        "prompt_tokens_mean": float(np.mean(lengths)),
        "prompt_tokens_median": float(np.median(lengths)),
        "prompt_tokens_max": int(max(lengths)),
        "truncated_prompts": int(sum(length >= enc.max_length for length in lengths)),
        "padded_tokens_total": int(padded),
        "padding_overhead": padded / sum(lengths) - 1.0,
        "batches": len(chunks),
    }


# --------------------------------------------------------------------------- where the time goes


@torch.inference_mode()
def breakdown(enc: Any, texts: list[str], instruction: str, batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds, summed over the same batches (each piece's best of ``repeats`` per batch, interleaved),
    of each piece of the two procedures:

    - tokenise: ``enc.prompts.build_many`` for all texts (once)
    - backbone_right: ``model.base_model`` forward on right-padded batches (what ``encode`` runs)
    - backbone_left: the same on left-padded batches
    - causallm_prefill_left: the full CausalLM forward as ``generate``'s first step runs it
      (left padding, position ids from the mask, ``logits_to_keep=1``, hidden states, a KV cache)
    - generate_left: the whole reference ``generate`` call (prefill + 2 decode steps + bookkeeping)
    - mlm_full_right (masked models): the full MLM forward with hidden states and all logits
    """
    device = enc.device
    seconds, prompts = time_call(lambda: enc.prompts.build_many(texts, instruction), device)
    ids_list = [p.ids for p in prompts]
    chunks = _sorted_chunks([len(p) for p in ids_list], batch_size)

    def prefill(ids: torch.Tensor, mask: torch.Tensor) -> Any:
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        return enc.model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=True,
                         logits_to_keep=1, output_hidden_states=True)

    pieces: dict[str, tuple[str, Callable[[torch.Tensor, torch.Tensor], Any]]] = {
        "backbone_right": ("right", lambda i, m: enc.model.base_model(input_ids=i, attention_mask=m)),
    }
    if enc.kind == "masked":
        pieces["mlm_full_right"] = ("right", lambda i, m: enc.model(input_ids=i, attention_mask=m,
                                                                    output_hidden_states=True))
    else:
        pieces["backbone_left"] = ("left", lambda i, m: enc.model.base_model(input_ids=i, attention_mask=m))
        pieces["causallm_prefill_left"] = ("left", prefill)
        pieces["generate_left"] = ("left", lambda i, m: reference_causal_batch(enc.model, i, m, enc._pad_id))
    totals = {"tokenise": seconds, **{name: 0.0 for name in pieces}}
    for chunk in chunks:
        batch = [ids_list[i] for i in chunk]
        padded = {side: _pad(batch, enc._pad_id, side, device) for side in ("left", "right")}
        best = {name: float("inf") for name in pieces}
        for repeat in range(repeats):
            names = list(pieces) if repeat % 2 == 0 else list(reversed(pieces))
            for name in names:
                side, fn = pieces[name]
                ids, mask = padded[side]
                best[name] = min(best[name], time_call(lambda fn=fn, ids=ids, mask=mask: fn(ids, mask), device)[0])
        for name in pieces:
            totals[name] += best[name]
    return totals


def profile_encode(enc: Any, texts: list[str], instruction: str, batch_size: int, top: int = 12) -> dict[str, Any]:
    """Split ``encode``'s wall time into tokenisation, padding, model forward and the rest, and list the
    top aten ops (torch.profiler) of one ``encode`` call and one reference call on the same texts."""
    spent = {"build_many": 0.0, "pad": 0.0, "backbone_forward": 0.0}
    originals: dict[str, Any] = {}

    def wrap(owner: Any, attribute: str, key: str) -> None:
        original = getattr(owner, attribute)
        originals[key] = (owner, attribute, original)

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                sync(enc.device)
                spent[key] += time.perf_counter() - start

        setattr(owner, attribute, timed)

    wrap(enc.prompts, "build_many", "build_many")
    wrap(enc, "_pad", "pad")
    wrap(enc._backbone, "forward", "backbone_forward")
    try:
        total, _ = time_call(lambda: ours_encode(enc, texts, instruction, batch_size), enc.device)
    finally:
        for owner, attribute, _original in originals.values():
            with contextlib.suppress(AttributeError):
                delattr(owner, attribute)  # drop the instance attribute: the class method shows again
    split = {key: round(value, 4) for key, value in spent.items()}
    split["total"] = round(total, 4)
    split["other"] = round(total - sum(spent.values()), 4)

    from torch.profiler import ProfilerActivity, profile

    tables: dict[str, list[dict[str, Any]]] = {}
    flops: dict[str, float] = {}
    for name, fn in (("ours", ours_encode), ("reference", reference_encode)):
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
            fn(enc, texts, instruction, batch_size)
        averages = prof.key_averages()
        events = sorted(averages, key=lambda e: -e.self_cpu_time_total)[:top]
        tables[name] = [
            {"op": e.key, "calls": e.count, "self_cpu_ms": round(e.self_cpu_time_total / 1000, 2),
             "gflop": round((e.flops or 0) / 1e9, 2)}
            for e in events
        ]
        total_ms = sum(e.self_cpu_time_total for e in averages) / 1000
        flops[name] = sum(e.flops or 0 for e in averages) / 1e9
        tables[name].append({"op": "TOTAL (all ops)", "calls": sum(e.count for e in averages),
                             "self_cpu_ms": round(total_ms, 2), "gflop": round(flops[name], 2)})
    # matmul FLOPs do not depend on what else runs on the machine: a contention-free view of the work
    return {"encode_split_s": split, "top_ops": tables, "matmul_gflop": flops,
            "gflop_ratio": flops["reference"] / max(flops["ours"], 1e-12), "texts": len(texts)}


# --------------------------------------------------------------------------- models


def load_default(model: str, device: str | None, dtype: str | None, batch_size: int) -> Any:
    from inbedder_index import InBedder

    return InBedder(model, device=device, dtype=dtype, batch_size=batch_size)


def build_masked_tiny(device: str | None, batch_size: int, seed: int) -> Any:
    """A RoBERTa-MLM of roberta-base size (hidden 768, 12 layers) with random weights, and the default
    model's tokenizer with an added ``<mask>`` token. Speed does not depend on the weights."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForMaskedLM

    from inbedder_index import InBedder
    from inbedder_index.models import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder())
    tokenizer.add_special_tokens({"mask_token": "<mask>"})
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    max_length = 512
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, max_position_embeddings=max_length + pad_id + 2, pad_token_id=pad_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        architectures=["RobertaForMaskedLM"],
    )
    model = RobertaForMaskedLM(config).eval()
    return InBedder.from_model(model, tokenizer, model_id="roberta-base-sized-random", device=device,
                               max_length=max_length, batch_size=batch_size)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- main


def run_one(label: str, enc: Any, texts: list[str], args: argparse.Namespace) -> dict[str, Any]:
    instruction = args.instruction
    logger.info("%s: %r, kind=%s, %d texts, batch %d, %d repeats", label, enc.model_id, enc.kind, len(texts),
                args.batch_size, args.repeats)
    result: dict[str, Any] = {
        "model": enc.model_id,
        "kind": enc.kind,
        "parameters": n_params(enc.model),
        "dtype": str(next(enc.model.parameters()).dtype).replace("torch.", ""),
        "attn_implementation": getattr(enc.model.config, "_attn_implementation", None),
        "instruction": instruction,
        "n_texts": len(texts),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "tokens": token_stats(enc, texts, instruction, args.batch_size),
    }
    result.update(measure(enc, texts, instruction, args.batch_size, args.repeats))
    result["target"] = {"ratio": TARGET_RATIO, "cosine": TARGET_COSINE}
    result["target_met"] = bool(result["ratio"] >= TARGET_RATIO and result["min_cosine"] >= TARGET_COSINE)
    if args.breakdown:
        logger.info("%s: breakdown of both procedures into pieces", label)
        result["breakdown_s"] = breakdown(enc, texts, instruction, args.batch_size, args.repeats)
    if args.profile:
        sample = texts[: args.batch_size * 2]
        logger.info("%s: profiling on %d texts", label, len(sample))
        result["profile"] = profile_encode(enc, sample, instruction, args.batch_size)
    return result


def print_result(label: str, r: dict[str, Any], quick: bool = False) -> None:
    tok = r["tokens"]
    print(f"\n== {label}: {r['model']} ({r['kind']}, {r['parameters'] / 1e6:.0f}M params, {r['dtype']}, "
          f"{r['attn_implementation']})")
    print(f"   {r['n_texts']} texts, batch {r['batch_size']}, best of {r['repeats']}; prompt tokens mean "
          f"{tok['prompt_tokens_mean']:.0f} / max {tok['prompt_tokens_max']}, {tok['truncated_prompts']} truncated, "
          f"padding +{100 * tok['padding_overhead']:.1f}%")
    print(f"   {'procedure':<26}{'texts/s':>10}{'best s':>10}{'median s':>10}{'cpu s':>10}")
    ref_name = "reference (MLM fwd)" if r["kind"] == "masked" else "reference (generate)"
    for name, key in (("InBedder.encode", "ours"), (ref_name, "reference")):
        row = r[key]
        print(f"   {name:<26}{row['texts_per_s']:>10.2f}{row['best_s']:>10.2f}{row['median_s']:>10.2f}"
              f"{row['cpu_best_s']:>10.2f}")
    print(f"   speed ratio (best) {r['ratio']:.2f}x   (median {r['ratio_median']:.2f}x, cpu time {r['ratio_cpu']:.2f}x)")
    load = r["load_average_1m"]
    print(f"   load average during the run {load['min']:.1f}-{load['max']:.1f} on {os.cpu_count()} cores"
          + ("  (shared machine: figures are noisy)" if load["max"] > (os.cpu_count() or 1) + 0.5 else ""))
    print(f"   1 - min cosine     {r['max_cosine_gap']:.2e}   (min cosine {r['min_cosine']:.7f})")
    met = "MET" if r["target_met"] else "NOT MET"
    caveat = "  (quick run: too small to judge the target)" if quick else ""
    print(f"   target ratio >= {TARGET_RATIO} with cosine >= {TARGET_COSINE}: {met}{caveat}")
    if "breakdown_s" in r:
        print(f"   breakdown (s, same batches, best of {r['repeats']} per batch):")
        for key, value in r["breakdown_s"].items():
            print(f"     {key:<24}{value:>8.2f}")
    if "profile" in r:
        split = r["profile"]["encode_split_s"]
        print(f"   encode() split on {r['profile']['texts']} texts (s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in split.items()))
        for name, rows in r["profile"]["top_ops"].items():
            print(f"   top ops, {name}:")
            for row in rows:
                print(f"     {row['op'][:44]:<44}{row['calls']:>7}{row['self_cpu_ms']:>12.1f} ms{row['gflop']:>10.2f} GFLOP")
        gflop = r["profile"]["matmul_gflop"]
        print(f"   matmul GFLOP: ours {gflop['ours']:.2f}, reference {gflop['reference']:.2f} "
              f"(reference/ours {r['profile']['gflop_ratio']:.2f}x)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="built-in name, hub id or folder (default: %(default)s)")
    parser.add_argument("--n", type=int, default=256, help="number of texts (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs of each procedure per batch; each batch's best counts (default: %(default)s)")
    parser.add_argument("--instruction", default=INSTRUCTIONS[0])
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--dtype", default=None, help="default: the encoder's (float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--medium-fraction", type=float, default=0.06, help="share of ~150-word texts")
    parser.add_argument("--long-fraction", type=float, default=0.0,
                        help="share of Big-Patent-like texts (thousands of words, truncated to max_length); each "
                             "batch holding one is padded to 512 tokens, so this makes runs much longer")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help="results name (default: encode_speed, or encode_speed_quick)")
    parser.add_argument("--masked-tiny", action="store_true",
                        help="also measure a roberta-base-sized random RoBERTa-MLM (the masked path)")
    parser.add_argument("--skip-causal", action="store_true", help="with --masked-tiny: only the masked model")
    parser.add_argument("--breakdown", action="store_true", help="time each piece of both procedures (prefill, decode, padding side)")
    parser.add_argument("--profile", action="store_true", help="split encode() and list top ops on 2 batches")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.batch_size, args.repeats = min(args.n, 8), min(args.batch_size, 4), 1
    setup_logging(args.verbose)
    if args.threads:
        torch.set_num_threads(args.threads)

    texts = mixed_texts(args.n, args.seed, args.medium_fraction, args.long_fraction)
    started = time.perf_counter()
    runs: dict[str, Any] = {}
    device = None
    if not args.skip_causal:
        enc = load_default(args.model, args.device, args.dtype, args.batch_size)
        device = enc.device
        runs["default"] = run_one("default", enc, texts, args)
        del enc
    if args.masked_tiny:
        enc = build_masked_tiny(args.device, args.batch_size, args.seed)
        device = enc.device
        runs["masked_tiny"] = run_one("masked-tiny", enc, texts, args)
        del enc

    print(f"\nencode_speed ({'quick' if args.quick else 'full'}), {machine_info(device)['cpu_model']}, "
          f"{torch.get_num_threads()} torch threads, device {device}")
    for label, result in runs.items():
        print_result(label, result, args.quick)
    elapsed = time.perf_counter() - started
    print(f"\n(total {elapsed:.0f} s)")

    if not args.no_save:
        payload = {
            "quick": args.quick,
            "machine": machine_info(device),
            "settings": {k: v for k, v in vars(args).items() if k not in {"no_save", "verbose"}},
            "runs": runs,
            "elapsed_s": round(elapsed, 1),
        }
        name = args.out or ("encode_speed_quick" if args.quick else "encode_speed")
        path = save_results(name, payload)
        logger.info("saved %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
