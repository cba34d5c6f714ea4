"""The encoding procedures ``encode_speed`` and ``latency`` time side by side on the same model,
texts and token ids (the published reference, ``InBedder.encode`` on each runtime,
sentence-transformers' last-token route), the FLOPs each is credited with and the matmul peak."""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .harness import cosine_rows, load_average, pyplot, table, time_call

logger = logging.getLogger("benchmarks")


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, side: str, device: Any) -> tuple[Any, Any]:
    """Ids and attention mask, padded on ``side`` ("left" or "right")."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def reference_encode(enc: Any, texts: Sequence[str], instruction: str, batch_size: int) -> np.ndarray:
    """The published procedure over ``texts`` (input order out), fed ``enc``'s prompt ids in batches
    sorted longest first. Causal: left-padded ``generate(max_new_tokens=3, output_hidden_states=True)``,
    the first step's last layer at the last position; masked: the full MLM forward, the mean of the
    last layer at the mask slots."""
    import torch

    prompts = [p.ids for p in enc.prompts.build_many(list(texts), instruction)]
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    vectors = np.empty((len(prompts), enc.dim), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = [prompts[i] for i in chunk]
            if enc.kind == "masked":
                ids, mask = pad_batch(batch, enc._pad_id, "right", enc.device)
                out = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, return_dict=True)
                slots = (ids == enc.tokenizer.mask_token_id).to(out.hidden_states[-1].dtype)[:, :, None]
                pooled = (out.hidden_states[-1] * slots).sum(dim=1) / slots.sum(dim=1)
            else:
                ids, mask = pad_batch(batch, enc._pad_id, "left", enc.device)
                out = enc.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=3, do_sample=False,
                                         output_hidden_states=True, return_dict_in_generate=True,
                                         pad_token_id=enc._pad_id)
                pooled = out.hidden_states[0][-1][:, -1, :]
            vectors[chunk] = pooled.float().cpu().numpy()
    return vectors


def sentence_transformers_lasttoken(enc: Any, folder: Path) -> Any:
    """sentence-transformers over ``enc``'s model (saved into ``folder``) with last-token pooling:
    the plain route to a decoder embedding. None when sentence-transformers is not installed."""
    try:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.models import Pooling, Transformer
    except ImportError:
        logger.warning("sentence-transformers is not installed: its last-token route is left out")
        return None
    if not (folder / "config.json").exists():
        enc.model.save_pretrained(folder)
        enc.tokenizer.save_pretrained(folder)
    transformer = Transformer(str(folder), max_seq_length=enc.max_length)
    pooling = Pooling(transformer.get_word_embedding_dimension(), pooling_mode="lasttoken")
    return SentenceTransformer(modules=[transformer, pooling], device=str(enc.device))


class FlopModel:
    """Forward-pass FLOPs of a transformer on real tokens: 2 x matmul parameters per token (the
    backbone's 2-D weights, embeddings excluded) plus attention (QK^T and AV, 4 x layers x width
    per query-key pair; causal models see the keys before them, masked ones all of them)."""

    def __init__(self, enc: Any) -> None:
        config = enc.model.config
        heads = config.num_attention_heads
        self.causal = enc.kind == "causal"
        self.n_layers = int(config.num_hidden_layers)
        self.attn_width = int(heads * (getattr(config, "head_dim", None) or config.hidden_size // heads))
        self.matmul_params = int(sum(p.numel() for name, p in enc.model.base_model.named_parameters()
                                     if p.dim() == 2 and "embed" not in name))

    def forward(self, new: int, context: int = 0) -> float:
        """``new`` tokens after ``context`` cached ones."""
        pairs = new * context + (new * (new + 1) / 2 if self.causal else new * new)
        return 2.0 * self.matmul_params * new + 4.0 * self.n_layers * self.attn_width * pairs

    def prompts(self, lengths: Sequence[int]) -> float:
        return sum(self.forward(n) for n in lengths)


def matmul_peak_gflops(device: Any = "cpu", repeats: int = 3) -> float:
    """The machine's practical peak: GFLOP/s of a large matmul (fp32 2048^2 on the CPU threads torch
    uses; bf16 8192^2 on a GPU), best of ``repeats`` after a warm-up."""
    import torch

    cuda = str(device).startswith("cuda")
    size = 8192 if cuda else 2048
    dtype = torch.bfloat16 if cuda else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = min(time_call(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def side_by_side(procedures: dict[str, Callable[[], Any]], rounds: int, device: Any,
                 peak: Callable[[], float]) -> tuple[dict[str, list[float]], dict[str, Any], list[float]]:
    """Each procedure once per round after an untimed warm-up, in an order rotated every round (so
    none always runs first on a shared machine), and ``peak()`` after each round: seconds per round,
    each procedure's last output and the peak readings."""
    for fn in procedures.values():
        fn()
    names = list(procedures)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    peaks: list[float] = []
    for number in range(rounds):
        for name in names[number % len(names):] + names[: number % len(names)]:
            elapsed, outputs[name] = time_call(procedures[name], device)
            seconds[name].append(elapsed)
        peaks.append(peak())
        logger.info("round %d/%d: %s", number + 1, rounds,
                    ", ".join(f"{name} {seconds[name][-1]:.2f} s" for name in names))
    return seconds, outputs, peaks


def compare_procedures(encoders: dict[str, Any], texts: list[str], instruction: str, batch_size: int, rounds: int,
                       st_model: Any = None) -> dict[str, Any]:
    """The reference, ``encode`` on each of ``encoders`` ("torch" is the one compared with) and
    sentence-transformers on the prompts as strings, side by side: medians, speed against the
    reference, cosine to InBedder's vectors and the fraction of the matmul peak; every procedure is
    credited with the same useful FLOPs, the prompts' forward pass."""
    import torch

    from inbedder_index.prompt import format_prompt

    base = encoders["torch"]
    procedures: dict[str, Callable[[], Any]] = {
        "reference": lambda: reference_encode(base, texts, instruction, batch_size)}
    for label, enc in encoders.items():
        procedures[label] = lambda enc=enc: enc.encode(texts, instruction, batch_size=batch_size, show_progress_bar=False)
    if st_model is not None:
        procedures["st-lasttoken"] = lambda: st_model.encode(
            [format_prompt(text, instruction) for text in texts], batch_size=batch_size, convert_to_numpy=True,
            show_progress_bar=False)
    load = [load_average()]
    seconds, outputs, peaks = side_by_side(procedures, rounds, base.device, lambda: matmul_peak_gflops(base.device))
    load.append(load_average())
    lengths = [len(p) for p in base.prompts.build_many(texts, instruction)]
    flops = FlopModel(base).prompts(lengths)
    peak = statistics.median(peaks)
    reference_s = statistics.median(seconds["reference"])
    rows: dict[str, dict[str, Any]] = {}
    for name, runs in seconds.items():
        median_s = statistics.median(runs)
        cosines = cosine_rows(outputs[name], outputs["torch"])
        rows[name] = {
            "median_s": median_s, "all_s": [round(s, 4) for s in runs], "texts_per_s": len(texts) / median_s,
            "tokens_per_s": sum(lengths) / median_s, "gflops": flops / median_s / 1e9,
            "fraction_of_peak": flops / median_s / 1e9 / peak, "vs_reference": reference_s / median_s,
            "min_cosine_to_inbedder": float(cosines.min()), "mean_cosine_to_inbedder": float(cosines.mean()),
        }
    gpu = str(base.device).startswith("cuda")
    return {
        "n_texts": len(texts), "instruction": instruction, "batch_size": batch_size, "rounds": rounds,
        "tokens": {"prompt_total": int(sum(lengths)), "prompt_mean": float(np.mean(lengths)),
                   "prompt_max": int(max(lengths)), "truncated": int(sum(n >= base.max_length for n in lengths))},
        "useful_gflop": flops / 1e9, "peak_gflops": peak, "peak_all_gflops": [round(p, 1) for p in peaks],
        "peak_kind": "bf16 8192^2 matmul, GPU" if gpu else f"fp32 2048^2 matmul, {torch.get_num_threads()} CPU threads",
        "procedures": rows, "load_average_1m": {"min": min(load), "max": max(load)},
    }


def comparison_lines(title: str, result: dict[str, Any]) -> list[str]:
    """One ``compare_procedures`` result as a caption and a table."""
    tok, load = result["tokens"], result["load_average_1m"]
    caption = (f"{title}: {result['n_texts']} texts, prompt tokens mean {tok['prompt_mean']:.0f} / max "
               f"{tok['prompt_max']} ({tok['truncated']} truncated), batch {result['batch_size']}, median of "
               f"{result['rounds']} interleaved rounds; peak {result['peak_gflops']:.0f} GFLOP/s "
               f"({result['peak_kind']}); load average {load['min']:.1f}-{load['max']:.1f}")
    rows = [(name, f"{row['texts_per_s']:.2f}", f"{row['median_s']:.2f}", f"{row['vs_reference']:.2f}x",
             f"{row['tokens_per_s']:.0f}", f"{row['gflops']:.1f}", f"{100 * row['fraction_of_peak']:.1f} %",
             f"{row['min_cosine_to_inbedder']:.4f}", f"{row['mean_cosine_to_inbedder']:.4f}")
            for name, row in result["procedures"].items()]
    return [caption, "", *table(("procedure", "texts/s", "median s", "x reference", "tokens/s", "GFLOP/s",
                                  "of peak", "min cosine", "mean cosine"), rows), ""]


def plot_comparison(results: dict[str, dict[str, Any]], title: str) -> Any:
    """One panel per setting: texts/s of each procedure, annotated with its speed-up and cosine."""
    fig, axes = pyplot().subplots(1, len(results), figsize=(5.5 * len(results), 4), squeeze=False)
    for ax, (label, result) in zip(axes[0], results.items()):
        rows = result["procedures"]
        names = list(rows)
        ax.bar(names, [rows[n]["texts_per_s"] for n in names], color=[f"C{i}" for i in range(len(names))])
        for i, name in enumerate(names):
            ax.annotate(f"{rows[name]['vs_reference']:.2f}x\ncos {rows[name]['min_cosine_to_inbedder']:.3f}",
                        (i, rows[name]["texts_per_s"]), ha="center", va="bottom", fontsize=7)
        ax.set_ylabel("texts/s (median)")
        ax.set_title(f"{label}: {result['n_texts']} texts, ~{result['tokens']['prompt_mean']:.0f} tokens", fontsize=9)
        ax.tick_params(axis="x", labelsize=7, rotation=20)
        ax.margins(y=0.25)
    fig.suptitle(title, fontsize=10)
    return fig


def runtime_encoders(base: Any, runtimes: Sequence[str]) -> dict[str, Any]:
    """``base`` (a torch InBedder) as "torch", plus the same model on each of ``runtimes``: "default"
    is ``InBedder(name)`` as a user gets it; "onnx" and "onnx-int8" wrap the loaded model."""
    from inbedder_index import InBedder

    encoders = {"torch": base}
    shared = dict(max_length=base.max_length, batch_size=base.batch_size, max_batch_tokens=base.max_batch_tokens,
                  instruction_room=base.prompts.instruction_room)
    for label in runtimes:
        if label == "default":
            encoders[label] = InBedder(base.model_id, **shared)
            continue
        runtime, _, quantize = label.partition("-")
        encoders[label] = InBedder.from_model(base.model, base.tokenizer, model_id=base.model_id, kind=base.kind,
                                              device=base.device, n_mask=base.n_mask or 3, runtime=runtime,
                                              quantize=quantize or None, **shared)
    return encoders
