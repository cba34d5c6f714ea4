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

from .harness import cosine_rows, load_average, table, time_call

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
    masked = enc.kind == "masked"
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = pad_batch([prompts[i] for i in chunk], enc._pad_id, "right" if masked else "left", enc.device)
            if masked:
                out = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True, return_dict=True)
                slots = (ids == enc.tokenizer.mask_token_id).to(out.hidden_states[-1].dtype)[:, :, None]
                pooled = (out.hidden_states[-1] * slots).sum(dim=1) / slots.sum(dim=1)
            else:
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


def matmul_peak_gflops(device: Any = "cpu", repeats: int = 3) -> float:
    """The machine's practical peak: GFLOP/s of a large matmul (fp32 2048^2 on the CPU threads torch
    uses; bf16 8192^2 on a GPU), best of ``repeats`` after a warm-up."""
    import torch

    size, dtype = (8192, torch.bfloat16) if str(device).startswith("cuda") else (2048, torch.float32)
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = min(time_call(lambda: a @ b, device)[0] for _ in range(repeats))
    return 2.0 * size**3 / best / 1e9


def side_by_side(procedures: dict[str, Callable[[], Any]], rounds: int, device: Any,
                 warm_up: Sequence[Callable[[], Any]] | None = None,
                 ) -> tuple[dict[str, list[float]], dict[str, Any], float, dict[str, float]]:
    """Each procedure once per round after untimed ``warm_up`` calls (default: each procedure), in an
    order rotated every round and reversed every other one (so that none always runs first, nor
    always right before its neighbour, on a shared machine), and the matmul peak after each round:
    seconds per round, each procedure's last output, the median peak and the load average's range."""
    for fn in procedures.values() if warm_up is None else warm_up:
        fn()
    names = list(procedures)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, Any] = {}
    peaks: list[float] = []
    load = [load_average()]
    for number in range(rounds):
        order = names[number % len(names):] + names[: number % len(names)]
        for name in order[::-1] if number % 2 else order:
            elapsed, outputs[name] = time_call(procedures[name], device)
            seconds[name].append(elapsed)
        peaks.append(matmul_peak_gflops(device))
        load.append(load_average())
        logger.info("round %d/%d: %s", number + 1, rounds,
                    ", ".join(f"{name} {seconds[name][-1]:.2f} s" for name in names))
    return seconds, outputs, statistics.median(peaks), {"min": min(load), "max": max(load)}


def compare_procedures(encoders: dict[str, Any], texts: list[str], instruction: str, batch_size: int, rounds: int,
                       st_model: Any = None) -> dict[str, Any]:
    """The reference, ``encode`` on each of ``encoders`` ("torch" is the one compared with) and
    sentence-transformers on the prompts as strings, side by side; every procedure is credited with
    the same useful FLOPs, the prompts' forward pass."""
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
    seconds, outputs, peak, load = side_by_side(procedures, rounds, base.device)
    lengths = [len(p) for p in base.prompts.build_many(texts, instruction)]
    flop_model = FlopModel(base)
    gflop = sum(flop_model.forward(n) for n in lengths) / 1e9
    reference_s = statistics.median(seconds["reference"])
    rows: dict[str, dict[str, Any]] = {}
    for name, runs in seconds.items():
        median_s = statistics.median(runs)
        cosines = cosine_rows(outputs[name], outputs["torch"])
        rows[name] = {
            "median_s": median_s, "all_s": [round(s, 4) for s in runs], "texts_per_s": len(texts) / median_s,
            "tokens_per_s": sum(lengths) / median_s, "gflops": gflop / median_s,
            "fraction_of_peak": gflop / median_s / peak, "vs_reference": reference_s / median_s,
            "min_cosine_to_inbedder": float(cosines.min()), "mean_cosine_to_inbedder": float(cosines.mean()),
        }
    gpu = str(base.device).startswith("cuda")
    return {
        "n_texts": len(texts), "instruction": instruction, "batch_size": batch_size, "rounds": rounds,
        "tokens": {"prompt_mean": float(np.mean(lengths)), "prompt_max": int(max(lengths)),
                   "truncated": int(sum(n >= base.max_length for n in lengths))},
        "useful_gflop": gflop, "peak_gflops": peak,
        "peak_kind": "bf16 8192^2 matmul, GPU" if gpu else f"fp32 2048^2 matmul, {torch.get_num_threads()} CPU threads",
        "procedures": rows, "load_average_1m": load,
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
