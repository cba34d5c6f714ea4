"""vLLM's pooling runner (task embed, last-token pooling) on the prompts ``latency.py --gpu-large`` times.

What a GPU user would pick instead of ``InBedder.encode``: the same OPT-1.3b-sized random model
(``latency.build_large``, bf16, saved once as a model folder), the same short and long texts,
formatted with InBedder's prompt, truncated by InBedder's own rule (the prompt ids are passed
as token prompts, so vLLM sees exactly the tokens InBedder runs). Reported: texts/s and tokens/s
(best of ``--rounds`` after a warm-up), and the cosine of vLLM's vectors to InBedder's.

Needs vLLM (``pip install vllm``, with its own torch) and a GPU; without either it records why
and exits 0. ``benchmarks/gpu_run.sh`` runs it after ``latency.py --gpu-large``.

Results: ``benchmarks/results/vllm_embed.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import add_common_args, cosine_rows, machine_info, news_texts, patent_texts, save_results, setup_logging  # noqa: E402
from latency import INSTRUCTIONS, build_large  # noqa: E402

logger = logging.getLogger("benchmarks.vllm_embed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-short", type=int, default=64)
    parser.add_argument("--n-long", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.5)
    add_common_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    skipped = None
    if not torch.cuda.is_available():
        skipped = "no GPU (torch.cuda.is_available() is False)"
    elif importlib.util.find_spec("vllm") is None:
        skipped = "vLLM is not installed (pip install vllm, or carry its wheels: benchmarks/gpu_run.sh)"
    result: dict = {"skipped": skipped, "machine": machine_info("cuda" if torch.cuda.is_available() else "cpu")}
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
                cosines = cosine_rows(vectors, ours)
                result[name] = {"n_texts": len(texts), "prompt_tokens": tokens, "best_s": best,
                                "texts_per_s": len(texts) / best, "tokens_per_s": tokens / best,
                                "min_cosine_to_inbedder": float(cosines.min())}
                print(f"vLLM embed, {name}: {len(texts) / best:.1f} texts/s, {tokens / best:.0f} tokens/s, "
                      f"min cosine to InBedder {cosines.min():.4f}")
    else:
        print(f"vllm_embed skipped: {skipped}")
    if not args.no_save:
        save_results("vllm_embed", result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
