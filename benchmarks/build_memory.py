"""Peak memory of an index build: does it grow with the corpus beyond the vectors themselves?

An ``InstructionIndex`` (FAISS, exact) is built over N short synthetic documents with a tiny
random Llama (hidden size ``--hidden``, 64 by default: memory matters here, not speed), each N in
a fresh process. After the model is built and a throwaway 512-document build has paid the
first-use costs, the peak (VmHWM) is reset; documents are streamed in chunks of ``--chunk`` so
the benchmark never holds the corpus; the peak growth is compared with the raw vectors (N x dim x
4 bytes). Two build orders take different code paths: ``corpus-first`` (every ``add``, then one
``add_instruction`` pass) and ``instruction-first`` (each ``add`` encodes its own chunk).

The verdict: growth beyond the vectors, fitted against N by least squares; its slope (bytes per
document) is what grows with the corpus, "flat" when it is below ``--flat-threshold`` of a
vector's bytes. ``--trace`` adds a ``tracemalloc`` run per N (Python allocations only) that
reports the top allocation sites at the peak.

    python -m benchmarks.build_memory --quick                    # sizes 2,000 and 5,000
    python -m benchmarks.build_memory                            # sizes 10,000, 30,000, 100,000
    python -m benchmarks.build_memory --quick --trace            # plus where Python memory goes
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .harness import MIB, peak_rss_bytes, reset_peak, rss_bytes
from .texts import INSTRUCTIONS, news_texts, news_topics

logger = logging.getLogger("benchmarks.build_memory")

ORDERS = ("corpus-first", "instruction-first")


def make_tiny_model(hidden: int, seed: int) -> tuple[Any, Any]:
    """A random Llama (2 layers, ``hidden`` wide) with a Metaspace BPE tokenizer trained in-process.

    The approach of ``tests/tiny_models.py``, but the tokenizer is trained on news-like texts
    (vocabulary 2,000) so that documents tokenise to realistic lengths instead of characters.
    """
    import torch
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    specials = ["<pad>", "<s>", "</s>", "<unk>", "<mask>"]
    corpus = news_texts(2000, seed=seed + 99_991) + INSTRUCTIONS + ["### Input:\n", "\n\n### Instruction:\n",
                                                                    "\n\n### Response:"]
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials, show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
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


def doc_chunks(n: int, chunk: int, seed: int):
    """N documents as ``{"id", "text", "metadata"}`` dicts, one chunk at a time (each chunk generated on demand)."""
    for index, start in enumerate(range(0, n, chunk)):
        count = min(chunk, n - start)
        chunk_seed = seed * 1_000_003 + 2 * index  # news_texts uses seed and seed + 1
        texts = news_texts(count, seed=chunk_seed)
        topics = news_topics(count, seed=chunk_seed)
        yield [{"id": f"doc-{start + i:07d}", "text": text, "metadata": {"topic": topic}}
               for i, (text, topic) in enumerate(zip(texts, topics))]


class _PeakTracer:
    """Snapshots Python memory (tracemalloc) whenever it reaches a new high, from a sampling thread.

    A thread polls the traced size every few milliseconds and takes a snapshot each time it
    exceeds the last one by ``step``; the last snapshot is then (close to) the composition of
    Python memory at its peak. Only Python allocations are seen.
    """

    def __init__(self, frames: int = 6, interval_s: float = 0.002, step: float = 1.03) -> None:
        import threading
        import tracemalloc

        self.tracemalloc = tracemalloc
        tracemalloc.start(frames)
        self.baseline = tracemalloc.take_snapshot()
        self.best_current = 0
        self.best: Any = None
        self.snapshots = 0
        self._stop = threading.Event()

        def sample() -> None:
            while not self._stop.wait(interval_s):
                current, _ = tracemalloc.get_traced_memory()
                if current > self.best_current * step and current > 1 << 20:
                    self.best = tracemalloc.take_snapshot()
                    self.best_current = current
                    self.snapshots += 1

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def _where(frame: Any) -> str:
        name = Path(frame.filename).as_posix()
        for marker in ("site-packages/", "/work/main/"):
            name = name.split(marker)[-1]
        return f"{name}:{frame.lineno}"

    def report(self, top: int = 12) -> dict[str, Any]:
        _, peak = self.tracemalloc.get_traced_memory()
        self.tracemalloc.stop()
        if self.best is None:
            return {"traced_peak_bytes": peak, "snapshots": 0, "top_sites": [], "top_tracebacks": []}
        sites = [
            {"site": self._where(stat.traceback[-1]), "size_diff_bytes": stat.size_diff, "count_diff": stat.count_diff}
            for stat in self.best.compare_to(self.baseline, "lineno")[:top]
        ]
        tracebacks = [
            {"size_diff_bytes": stat.size_diff, "count_diff": stat.count_diff,
             "stack_innermost_first": [self._where(frame) for frame in reversed(stat.traceback)]}
            for stat in self.best.compare_to(self.baseline, "traceback")[:top]
        ]
        return {"traced_at_snapshot_bytes": self.best_current, "traced_peak_bytes": peak,
                "snapshots": self.snapshots, "top_sites": sites, "top_tracebacks": tracebacks}


def _warm_up(encoder: Any, spec: dict[str, Any], work: Path) -> None:
    """One small build through the same code path, thrown away: first-use costs are not corpus costs."""
    from inbedder_index.index import InstructionIndex

    with InstructionIndex.open(work / "warmup", model=encoder, backend="faiss") as index:
        index.add_instruction(spec["instruction"], answers=spec["answers"], show_progress_bar=False)
        for docs in doc_chunks(512, 256, spec["seed"] + 7):
            index.add(docs)
    shutil.rmtree(work / "warmup")


def _silence_progress_bars() -> None:
    """index.add() shows an "indexing" bar from 256 documents, and _sync's encode() calls an "encoding" bar
    per batch of 256 unique texts (it does not pass show_progress_bar): hundreds of bars in a benchmark log.
    Disabled here, in this process only."""
    from tqdm.auto import tqdm

    import inbedder_index.encoder
    import inbedder_index.index

    def quiet(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return tqdm(*args, **kwargs)

    inbedder_index.index.tqdm = quiet  # type: ignore[attr-defined]
    inbedder_index.encoder.tqdm = quiet  # type: ignore[attr-defined]


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from inbedder_index import InBedder
    from inbedder_index.index import InstructionIndex

    _silence_progress_bars()

    torch.set_num_threads(spec["threads"])
    n, chunk, order = spec["n"], spec["chunk"], spec["order"]
    model, tokenizer = make_tiny_model(spec["hidden"], spec["seed"])
    encoder = InBedder.from_model(model, tokenizer, model_id=f"tiny-llama-h{spec['hidden']}", device="cpu",
                                  max_length=512)
    _ = encoder.fingerprint
    gc.collect()
    baseline_model = rss_bytes()  # the brief's baseline: the model is loaded, nothing else has run
    work = Path(tempfile.mkdtemp(prefix=f"build_memory-{n}-", dir=spec.get("tmpdir")))
    if spec["warmup"]:
        _warm_up(encoder, spec, work)
    tracer = None
    gc.collect()
    baseline = rss_bytes()
    resettable = reset_peak()
    if spec["trace"]:
        tracer = _PeakTracer()

    phases: dict[str, Any] = {}
    start = time.perf_counter()
    index = InstructionIndex.open(work / "index", model=encoder, backend="faiss")

    def add_all() -> None:
        t0 = time.perf_counter()
        for docs in doc_chunks(n, chunk, spec["seed"]):
            index.add(docs)
            del docs
        phases["add_s"] = time.perf_counter() - t0
        phases["peak_after_add_bytes"] = peak_rss_bytes()

    def add_instruction() -> None:
        t0 = time.perf_counter()
        index.add_instruction(spec["instruction"], answers=spec["answers"], show_progress_bar=False)
        phases["add_instruction_s"] = time.perf_counter() - t0
        phases["peak_after_add_instruction_bytes"] = peak_rss_bytes()

    if order == "corpus-first":
        add_all()
        add_instruction()
    else:
        add_instruction()
        add_all()
    build_s = time.perf_counter() - start
    peak = peak_rss_bytes()
    if tracer is not None:
        tracer.stop()
    rss_after = rss_bytes()
    stats = index.stats()
    dim = stats["collections"][0]["dim"]
    assert len(index) == n and stats["collections"][0]["count"] == n, (len(index), stats)
    index.close()
    peak_after_close = peak_rss_bytes()

    result: dict[str, Any] = {
        "n": n,
        "order": order,
        "dim": dim,
        "baseline_rss_bytes": baseline,
        "baseline_after_model_rss_bytes": baseline_model,
        "warmup": spec["warmup"],
        "peak_growth_vs_model_bytes": peak - baseline_model,
        "peak_reset_supported": resettable,
        "peak_rss_bytes": peak,
        "peak_growth_bytes": peak - baseline,
        "rss_growth_after_build_bytes": rss_after - baseline,
        "peak_growth_incl_close_bytes": peak_after_close - baseline,
        "vector_bytes": n * dim * 4,
        "build_s": build_s,
        "docs_per_s": n / build_s,
        "phases": {k: (v - baseline if k.startswith("peak") else v) for k, v in phases.items()},
        "on_disk_bytes": {
            "corpus_sqlite": sum(f.stat().st_size for f in (work / "index").glob("corpus.sqlite*")),
            "faiss": sum(f.stat().st_size for f in (work / "index" / "faiss").rglob("*") if f.is_file()),
        },
        "torch_threads": torch.get_num_threads(),
    }
    if tracer is not None:
        result["tracemalloc"] = tracer.report()
    if not resettable:
        result["note"] = "VmHWM could not be reset: peaks include model loading"
    shutil.rmtree(work, ignore_errors=True)
    return result


def run_size(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"{spec['order']}-{spec['n']}-{int(spec['trace'])}.json"
    logger.info("N=%d, %s%s: fresh process", spec["n"], spec["order"], " (tracemalloc)" if spec["trace"] else "")
    return harness.run_in_child("benchmarks.build_memory", spec, out)


def fit_excess(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares line of (peak growth - vector bytes) against N: the slope is bytes per document."""
    if len(results) < 2:
        return None
    n = np.array([r["n"] for r in results], dtype=np.float64)
    excess = np.array([r["peak_growth_bytes"] - r["vector_bytes"] for r in results], dtype=np.float64)
    slope, intercept = np.polyfit(n, excess, 1)
    return {"slope_bytes_per_doc": float(slope), "intercept_bytes": float(intercept)}


def summary(payload: dict[str, Any]) -> list[str]:
    settings = payload["settings"]
    results = [r for by_order in payload["results"].values() for r in by_order]
    dim = results[0]["dim"]
    rows = [(r["order"], f"{r['n']:,}", f"{r['build_s']:.1f}", f"{r['docs_per_s']:.0f}",
             f"{r['peak_growth_vs_model_bytes'] / MIB:.1f}", f"{r['peak_growth_bytes'] / MIB:.1f}",
             f"{r['vector_bytes'] / MIB:.1f}", f"{(r['peak_growth_bytes'] - r['vector_bytes']) / MIB:.1f}",
             f"{(r['peak_growth_bytes'] - r['vector_bytes']) / r['n']:.0f}", f"{r['rss_growth_after_build_bytes'] / MIB:.1f}")
            for r in results]
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
    for order, traced in payload.get("tracemalloc_runs", {}).items():
        for r in traced:
            sites = r["tracemalloc"]["top_sites"][:5]
            lines.append(f"- tracemalloc, {order}, N={r['n']:,}: " + (", ".join(
                f"{site['site']} {site['size_diff_bytes'] / MIB:.2f} MiB" for site in sites) or "no snapshot"))
    return lines


def plot(payload: dict[str, Any]) -> Any:
    by_order = payload["results"]
    fig, ax = harness.pyplot().subplots(figsize=(7.5, 5))
    all_n: list[int] = []
    for color, (order, results) in zip(("C0", "C1"), by_order.items()):
        n = [r["n"] for r in results]
        all_n += n
        ax.plot(n, [r["peak_growth_bytes"] / MIB for r in results], "o-", color=color, label=f"peak RSS growth, {order}")
        ax.plot(n, [r["rss_growth_after_build_bytes"] / MIB for r in results], "x:", color=color, alpha=0.6,
                label=f"RSS kept after build, {order}")
    if all_n:
        dim = next(iter(by_order.values()))[0]["dim"]
        grid = np.array(sorted(set([0] + all_n)))
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
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run per N: top allocation sites")
    parser.add_argument("--no-warmup", action="store_true",
                        help="measure from right after the model is built (no throwaway 512-document build first)")
    parser.add_argument("--flat-threshold", type=float, default=0.1,
                        help="'flat' when the excess slope is below this fraction of dim x 4 bytes per doc")
    parser.add_argument("--out", default=None, help="results name (default: build_memory, or build_memory_quick)")
    args = harness.parse(parser, argv)
    if harness.child_run(args, run_child):
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([2000, 5000] if args.quick else
                                                                       [10_000, 30_000, 100_000])
    orders = list(ORDERS) if args.order == "both" else [args.order]
    load_start = harness.load_average()
    work = Path(tempfile.mkdtemp(prefix="build_memory-"))
    base_spec = {"chunk": args.chunk, "hidden": args.hidden, "instruction": args.instruction,
                 "answers": not args.no_answers, "threads": args.threads, "seed": args.seed, "tmpdir": str(work),
                 "warmup": not args.no_warmup}
    by_order: dict[str, list[dict[str, Any]]] = {}
    traces: dict[str, list[dict[str, Any]]] = {}
    try:
        for order in orders:
            by_order[order] = [run_size(dict(base_spec, n=n, order=order, trace=False), work) for n in sizes]
            if args.trace:
                traces[order] = [run_size(dict(base_spec, n=n, order=order, trace=True), work) for n in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    info = harness.machine_info("cpu")
    info["load_average_1m_start"] = load_start
    dim = next(iter(by_order.values()))[0]["dim"]
    verdicts: dict[str, Any] = {}
    for order, results in by_order.items():
        fit = fit_excess(results)
        if fit is None:
            continue
        vector_per_doc = dim * 4
        # A run's fixed costs (torch's per-batch working set, allocator slack) swing by several MiB; the
        # slope means something only once the largest N's bookkeeping is well above that.
        verdicts[order] = {**fit, "vector_bytes_per_doc": vector_per_doc,
                           "slope_vs_vector_bytes": fit["slope_bytes_per_doc"] / vector_per_doc,
                           "slope_vs_576d_vector_bytes": fit["slope_bytes_per_doc"] / (576 * 4),
                           "flat": fit["slope_bytes_per_doc"] < args.flat_threshold * vector_per_doc,
                           "judged": max(sizes) >= 10_000}
    payload = {
        "quick": args.quick,
        "settings": {"sizes": sizes, "orders": orders, "chunk": args.chunk, "hidden": args.hidden,
                     "instruction": args.instruction, "answers": not args.no_answers, "threads": args.threads,
                     "seed": args.seed, "flat_threshold": args.flat_threshold, "backend": "faiss (exact)"},
        "machine": info,
        "results": by_order,
        "verdicts": verdicts,
        "tracemalloc_runs": traces,
        "notes": [
            ("Each N ran in a fresh subprocess. 'peak_growth' = VmHWM during the build minus VmRSS after a "
             "throwaway 512-document warm-up build (VmHWM reset there); 'peak_growth_vs_model' = the same "
             "VmHWM minus VmRSS right after building the model."),
            "Documents were streamed: chunks generated on demand, one index.add call per chunk.",
        ],
    }
    harness.finish(args.out or ("build_memory_quick" if args.quick else "build_memory"), payload, summary,
                   save=not args.no_save, figure=plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
