"""vLLM's pooling runner (task embed, last-token pooling) on the prompts ``benchmarks.latency --gpu-large`` times.

What a GPU user would pick instead of ``InBedder.encode``: the same OPT-1.3b-sized random model
(``latency.build_large``, bf16, saved once as a model folder), the same short and long texts,
formatted with InBedder's prompt, truncated by InBedder's own rule (the prompt ids are passed
as token prompts, so vLLM sees exactly the tokens InBedder runs). Reported: texts/s and tokens/s
(best of ``--rounds`` after a warm-up), and the cosine of vLLM's vectors to InBedder's.

Needs vLLM (``pip install vllm``, with its own torch) and a GPU; without either it records why
and exits 0. ``benchmarks/gpu_run.sh`` runs it after ``python -m benchmarks.latency --gpu-large``.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from . import harness
from .latency import INSTRUCTIONS, build_large
from .texts import news_texts, patent_texts


def summary(payload: dict[str, Any]) -> list[str]:
    if payload.get("skipped"):
        return [f"Skipped: {payload['skipped']}."]
    return harness.table(("texts", "texts/s", "tokens/s", "min cosine to InBedder"), [
        (name, f"{payload[name]['texts_per_s']:.1f}", f"{payload[name]['tokens_per_s']:.0f}",
         f"{payload[name]['min_cosine_to_inbedder']:.4f}") for name in ("short", "long") if name in payload])


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__)
    parser.add_argument("--n-short", type=int, default=64)
    parser.add_argument("--n-long", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    args = harness.parse(parser, argv)
    import torch

    skipped = None
    if not torch.cuda.is_available():
        skipped = "no GPU (torch.cuda.is_available() is False)"
    elif importlib.util.find_spec("vllm") is None:
        skipped = "vLLM is not installed (pip install vllm, or carry its wheels: benchmarks/gpu_run.sh)"
    result: dict = {"skipped": skipped, "machine": harness.machine_info("cuda" if torch.cuda.is_available() else "cpu")}
    if skipped is None:
        from vllm import LLM

        enc = build_large("cuda", args.max_length, 32, args.seed)
        with tempfile.TemporaryDirectory(prefix="opt-1.3b-sized-") as folder:
            enc.model.save_pretrained(folder)
            enc.tokenizer.save_pretrained(folder)
            llm = LLM(model=folder, runner="pooling", dtype="bfloat16", max_model_len=args.max_length + 8,
                      gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=False,
                      override_pooler_config={"pooling_type": "LAST", "normalize": True})
            for name, texts in (("short", news_texts(args.n_short, args.seed)), ("long", patent_texts(args.n_long, args.seed))):
                prompts = [{"prompt_token_ids": p.ids} for p in enc.prompts.build_many(texts, INSTRUCTIONS[0])]
                tokens = sum(len(p["prompt_token_ids"]) for p in prompts)
                llm.embed(prompts[:2], use_tqdm=False)
                best, outputs = float("inf"), None
                for _ in range(args.rounds):
                    start = time.perf_counter()
                    outputs = llm.embed(prompts, use_tqdm=False)
                    best = min(best, time.perf_counter() - start)
                vectors = torch.tensor([o.outputs.embedding for o in outputs]).numpy()
                ours = enc.encode(texts, INSTRUCTIONS[0], show_progress_bar=False)
                cosines = harness.cosine_rows(vectors, ours)
                result[name] = {"n_texts": len(texts), "prompt_tokens": tokens, "best_s": best,
                                "texts_per_s": len(texts) / best, "tokens_per_s": tokens / best,
                                "min_cosine_to_inbedder": float(cosines.min())}
    harness.finish("vllm_embed", result, summary, save=not args.no_save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
