"""Peak memory of an index build: does it grow with the corpus beyond the vectors themselves?

Each N builds a FAISS ``InstructionIndex`` with a tiny random Llama in a fresh process; after a
throwaway warm-up build the peak (VmHWM) is reset and documents are streamed in chunks. Two orders
take different code paths: ``corpus-first`` (every ``add``, then ``add_instruction``) and
``instruction-first``. The verdict: the slope of (peak growth - raw vectors) against N, "flat"
below ``--flat-threshold`` of a vector's bytes per document.

    python -m benchmarks.build_memory --quick                    # sizes 2,000 and 5,000
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .harness import MIB, peak_rss_bytes, rss_bytes
from .texts import INSTRUCTIONS, news_texts, news_topics

logger = logging.getLogger("benchmarks.build_memory")

ORDERS = ("corpus-first", "instruction-first")


def make_tiny_model(hidden: int, seed: int) -> tuple[Any, Any]:
    """A random Llama (2 layers, ``hidden`` wide) with a Metaspace BPE tokenizer trained in-process
    on news-like texts (vocabulary 2,000), so that documents tokenise to realistic lengths."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    corpus = news_texts(2000, seed=seed + 99_991) + INSTRUCTIONS + ["### Input:\n", "\n\n### Instruction:\n",
                                                                    "\n\n### Response:"]
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", mask_token="<mask>")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1100,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, architectures=["LlamaForCausalLM"],
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def doc_chunks(n: int, chunk: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """N documents as ``{"id", "text", "metadata"}`` dicts, one chunk at a time (each generated on demand)."""
    for index, start in enumerate(range(0, n, chunk)):
        count = min(chunk, n - start)
        chunk_seed = seed * 1_000_003 + 2 * index  # news_texts uses seed and seed + 1
        texts, topics = news_texts(count, seed=chunk_seed), news_topics(count, seed=chunk_seed)
        yield [{"id": f"doc-{start + i:07d}", "text": text, "metadata": {"topic": topic}}
               for i, (text, topic) in enumerate(zip(texts, topics))]


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """One build of ``spec["n"]`` documents in ``spec["order"]``, in this fresh process."""
    import torch
    from tqdm.auto import tqdm

    import inbedder_index.encoder
    import inbedder_index.sync
    from inbedder_index import InBedder
    from inbedder_index.index import InstructionIndex

    for module in (inbedder_index.encoder, inbedder_index.sync):  # their bars show from a few hundred documents
        module.tqdm = lambda *args, **kwargs: tqdm(*args, **{**kwargs, "disable": True})  # type: ignore[attr-defined]
    torch.set_num_threads(spec["threads"])
    n, order, instruction, answers = spec["n"], spec["order"], spec["instruction"], spec["answers"]
    logger.info("N=%d, %s", n, order)
    model, tokenizer = make_tiny_model(spec["hidden"], spec["seed"])
    encoder = InBedder.from_model(model, tokenizer, model_id=f"tiny-llama-h{spec['hidden']}", device="cpu",
                                  max_length=512)
    _ = encoder.fingerprint
    gc.collect()
    baseline_model = rss_bytes()  # the model is loaded, nothing else has run
    work = Path(tempfile.mkdtemp(prefix=f"{order}-{n}-", dir=spec["tmpdir"]))
    with InstructionIndex.open(work / "warmup", model=encoder, backend="faiss") as warmup:  # first-use costs
        warmup.add_instruction(instruction, answers=answers, show_progress_bar=False)
        for docs in doc_chunks(512, 256, spec["seed"] + 7):
            warmup.add(docs)
    gc.collect()
    baseline = rss_bytes()
    result: dict[str, Any] = {"n": n, "order": order, "peak_reset_supported": harness.reset_peak(), "phases": {}}
    start = time.perf_counter()
    index = InstructionIndex.open(work / "index", model=encoder, backend="faiss")

    def add_all() -> None:
        for docs in doc_chunks(n, spec["chunk"], spec["seed"]):
            index.add(docs)

    steps = [("add", add_all),
             ("add_instruction", lambda: index.add_instruction(instruction, answers=answers, show_progress_bar=False))]
    for name, step in steps if order == "corpus-first" else steps[::-1]:
        result["phases"][f"{name}_s"] = harness.time_call(step)[0]
        result["phases"][f"peak_after_{name}_bytes"] = peak_rss_bytes() - baseline
    build_s = time.perf_counter() - start
    peak, rss_after, stats = peak_rss_bytes(), rss_bytes(), index.stats()["collections"][0]
    assert len(index) == n and stats["count"] == n, (len(index), stats)
    index.close()
    shutil.rmtree(work, ignore_errors=True)  # the next size's build needs the disk, not these files
    return {**result, "dim": stats["dim"], "vector_bytes": n * stats["dim"] * 4, "build_s": build_s,
            "docs_per_s": n / build_s, "peak_growth_bytes": peak - baseline,
            "peak_growth_vs_model_bytes": peak - baseline_model, "rss_growth_after_build_bytes": rss_after - baseline}


def fit_excess(results: list[dict[str, Any]], dim: int, threshold: float, judged: bool) -> dict[str, Any]:
    """Least-squares line of (peak growth - vector bytes) against N: the slope is bytes per document.
    A run's fixed costs (torch's working set, allocator slack) swing by several MiB, so the slope
    is only ``judged`` once the largest N's bookkeeping is well above that."""
    n = np.array([r["n"] for r in results], dtype=np.float64)
    excess = np.array([r["peak_growth_bytes"] - r["vector_bytes"] for r in results], dtype=np.float64)
    slope = float(np.polyfit(n, excess, 1)[0])
    return {"slope_bytes_per_doc": slope, "slope_vs_vector_bytes": slope / (dim * 4),
            "slope_vs_576d_vector_bytes": slope / (576 * 4), "flat": slope < threshold * dim * 4, "judged": judged}


def summary(payload: dict[str, Any]) -> list[str]:
    settings = payload["settings"]
    results = [r for by_order in payload["results"].values() for r in by_order]
    dim = results[0]["dim"]
    rows = [(r["order"], f"{r['n']:,}", f"{r['build_s']:.1f}", f"{r['docs_per_s']:.0f}",
             f"{r['peak_growth_vs_model_bytes'] / MIB:.1f}", f"{r['peak_growth_bytes'] / MIB:.1f}",
             f"{r['vector_bytes'] / MIB:.1f}", f"{(r['peak_growth_bytes'] - r['vector_bytes']) / MIB:.1f}",
             f"{(r['peak_growth_bytes'] - r['vector_bytes']) / r['n']:.0f}",
             f"{r['rss_growth_after_build_bytes'] / MIB:.1f}") for r in results]
    lines = [f"FAISS exact, tiny Llama (dim {dim}), chunks of {settings['chunk']:,}, answers "
             f"{'on' if settings['answers'] else 'off'}, {settings['threads']} thread(s).", "",
             *harness.table(("order", "N", "build s", "docs/s", "peak vs model MB", "peak growth MB", "vectors MB",
                             "beyond vectors MB", "beyond, B per doc", "kept after MB"), rows), "",
             "Peak vs model: VmHWM during the build minus RSS right after building the model; peak growth: minus RSS "
             "after the warm-up build (first-use costs excluded); kept after: RSS growth still held when the build "
             "returns.", ""]
    for order, fit in payload["verdicts"].items():
        verdict = ("flat" if fit["flat"] else "grows with the corpus") if fit["judged"] else "not judged: sizes too small"
        lines.append(f"- {order}: growth beyond the vectors rises {fit['slope_bytes_per_doc']:.0f} B per document "
                     f"({fit['slope_vs_vector_bytes']:.2f}x a {dim}-d vector, {fit['slope_vs_576d_vector_bytes']:.2f}x a "
                     f"576-d one): {verdict} (threshold {settings['flat_threshold']:.0%} of a vector)")
    return lines


def plot(payload: dict[str, Any]) -> Any:
    by_order = payload["results"]
    fig, ax = harness.pyplot().subplots(figsize=(7.5, 5))
    for color, (order, results) in zip(("C0", "C1"), by_order.items()):
        n = [r["n"] for r in results]
        ax.plot(n, [r["peak_growth_bytes"] / MIB for r in results], "o-", color=color, label=f"peak RSS growth, {order}")
        ax.plot(n, [r["rss_growth_after_build_bytes"] / MIB for r in results], "x:", color=color, alpha=0.6,
                label=f"RSS kept after build, {order}")
    dim = next(iter(by_order.values()))[0]["dim"]
    grid = np.array(sorted({0, *(r["n"] for results in by_order.values() for r in results)}))
    ax.plot(grid, grid * dim * 4 / MIB, "k--", label=f"raw vectors (N x {dim} x 4 B)")
    ax.set_xlabel("documents (N)")
    ax.set_ylabel("MiB above the baseline RSS (model loaded, warm-up build done)")
    ax.set_title(f"Index build peak memory, FAISS exact, tiny Llama{' (quick)' if payload['quick'] else ''}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, child=True)
    parser.add_argument("--sizes", default=None, help="comma-separated N (default 10000,30000,100000; --quick: 2000,5000)")
    parser.add_argument("--order", choices=(*ORDERS, "both"), default="both", help="build order(s) (default both)")
    parser.add_argument("--chunk", type=int, default=5000, help="documents per index.add call (default 5,000)")
    parser.add_argument("--hidden", type=int, default=64, help="tiny model's hidden size = vector dim (default 64)")
    parser.add_argument("--instruction", default=INSTRUCTIONS[0])
    parser.add_argument("--no-answers", action="store_true", help="add_instruction(answers=False)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each run (default 1)")
    parser.add_argument("--flat-threshold", type=float, default=0.1,
                        help="'flat' when the excess slope is below this fraction of dim x 4 bytes per doc")
    args = harness.parse(parser, argv)
    if harness.child_run(args, run_child):
        return 0
    sizes = [int(s) for s in harness.names(args.sizes or ("2000,5000" if args.quick else "10000,30000,100000"))]
    orders = list(ORDERS) if args.order == "both" else [args.order]
    settings = {**harness.recorded(args), "sizes": sizes, "orders": orders, "answers": not args.no_answers,
                "backend": "faiss (exact)"}
    by_order: dict[str, list[dict[str, Any]]] = {order: [] for order in orders}
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True, prefix="build_memory-") as work:
        for order in orders:
            for n in sizes:
                spec, out = dict(settings, n=n, order=order, tmpdir=work), Path(work) / f"{order}-{n}.json"
                by_order[order].append(harness.run_in_child("benchmarks.build_memory", spec, out))
    dim = by_order[orders[0]][0]["dim"]
    verdicts = {order: fit_excess(results, dim, args.flat_threshold, max(sizes) >= 10_000)
                for order, results in by_order.items() if len(results) >= 2}
    payload = {"settings": settings, "results": by_order, "verdicts": verdicts}
    harness.finish(args, "build_memory", payload, summary, figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
