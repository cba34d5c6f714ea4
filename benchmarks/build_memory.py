"""Peak memory of an index build: does it grow with the corpus beyond the vectors themselves?

An ``InstructionIndex`` (FAISS backend, exact) is built over N short synthetic documents
(AG-News-like, ~40 words, from ``common.news_texts``) with a tiny random Llama built from a config
(hidden size ``--hidden``, 64 by default; speed does not matter here, memory does). Each N runs in
a fresh subprocess:

1. build the tokenizer and the model, wrap them in ``InBedder.from_model``; RSS now is the
   "after loading the model" baseline (reported as ``vs model``);
2. a throwaway 512-document build through the same calls (``--no-warmup`` skips it): torch's
   per-batch working set, SQLite, FAISS and the tokenizer's first-use allocations are fixed
   costs, not corpus costs, and would otherwise blur the per-document slope at small N;
   baseline = RSS (VmRSS) now; reset the peak (VmHWM, via ``/proc/self/clear_refs``);
3. build: documents are streamed in chunks of ``--chunk`` (5,000): each chunk is generated, passed
   to ``index.add`` and dropped, so the benchmark itself never holds the corpus;
   ``add_instruction`` encodes the corpus under one instruction (with answers, the default);
4. peak growth = VmHWM - baseline, compared with the raw vectors, N x dim x 4 bytes.

Two build orders, since they take different code paths (``--order``):

- ``corpus-first``: every ``add`` first (no collection yet, so nothing is encoded), then
  ``add_instruction``: one pass over the whole corpus (``InstructionIndex._sync(ids=None)``).
- ``instruction-first``: ``add_instruction`` on the empty index, then every ``add`` encodes
  its own chunk (``_sync`` narrowed to the chunk's ids).

The verdict: growth beyond the vectors = peak growth - vector bytes, fitted against N by least
squares; its slope (bytes per document) is the part that grows with the corpus. "Flat" means
the slope is small next to the vectors' own bytes per document (``--flat-threshold``, a
fraction of dim x 4; default 0.1). Some per-document growth is inherent (the id maps of the
FAISS backend: a Python dict each way, plus FAISS's own id map), so the script reports the slope,
not just a yes/no.

``--trace`` adds one more run per N with ``tracemalloc`` on (slower, and its own overhead
inflates RSS, so it is never mixed with the RSS figures): a sampling thread snapshots Python
memory each time it reaches a new high, and the last such snapshot is compared with one at the
baseline: the top allocation sites (file:line) and call stacks are reported. tracemalloc sees
Python allocations only (not FAISS's C++ arrays, torch tensors or SQLite's page cache).

Run from the repository root::

    python benchmarks/build_memory.py --quick                    # sizes 2,000 and 5,000
    python benchmarks/build_memory.py                            # sizes 10,000, 30,000, 100,000
    python benchmarks/build_memory.py --quick --trace            # plus where Python memory goes

Results go to ``benchmarks/results/build_memory.json`` and ``build_memory.png``
(``build_memory_quick.*`` for ``--quick``).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    INSTRUCTIONS,
    RESULTS_DIR,
    add_common_args,
    machine_info,
    news_texts,
    news_topics,
    peak_rss_bytes,
    reset_peak,
    rss_bytes,
    run_in_child,
    save_results,
    setup_logging,
)

logger = logging.getLogger("benchmarks.build_memory")

ORDERS = ("corpus-first", "instruction-first")


# --------------------------------------------------------------------------- memory


# --------------------------------------------------------------------------- the tiny model


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


# --------------------------------------------------------------------------- child: one size


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


# --------------------------------------------------------------------------- parent


def run_size(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    out = work / f"{spec['order']}-{spec['n']}-{int(spec['trace'])}.json"
    logger.info("N=%d, %s%s: fresh process", spec["n"], spec["order"], " (tracemalloc)" if spec["trace"] else "")
    return run_in_child(__file__, spec, out)


def fit_excess(results: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares line of (peak growth - vector bytes) against N: the slope is bytes per document."""
    if len(results) < 2:
        return None
    n = np.array([r["n"] for r in results], dtype=np.float64)
    excess = np.array([r["peak_growth_bytes"] - r["vector_bytes"] for r in results], dtype=np.float64)
    slope, intercept = np.polyfit(n, excess, 1)
    return {"slope_bytes_per_doc": float(slope), "intercept_bytes": float(intercept)}


MIB = 2**20


def table(results: list[dict[str, Any]]) -> str:
    header = (f"{'order':<18} {'N':>8} {'build s':>8} {'docs/s':>7} {'vs model':>10} {'peak growth':>12} {'vectors':>9} "
              f"{'beyond vec':>11} {'growth/doc':>11} {'beyond/doc':>11} {'kept after':>11}")
    lines = [header, "-" * len(header)]
    for r in results:
        beyond = r["peak_growth_bytes"] - r["vector_bytes"]
        lines.append(
            f"{r['order']:<18} {r['n']:>8,} {r['build_s']:>8.1f} {r['docs_per_s']:>7.0f} "
            f"{r['peak_growth_vs_model_bytes'] / MIB:>8.1f}MB "
            f"{r['peak_growth_bytes'] / MIB:>10.1f}MB {r['vector_bytes'] / MIB:>7.1f}MB {beyond / MIB:>9.1f}MB "
            f"{r['peak_growth_bytes'] / r['n']:>9.0f} B {beyond / r['n']:>9.0f} B "
            f"{r['rss_growth_after_build_bytes'] / MIB:>9.1f}MB"
        )
    lines.append("(vs model: VmHWM during the build minus RSS right after building the model; peak growth: minus RSS "
                 "after the warm-up build instead, i.e. without first-use costs; vectors: N x dim x 4; kept after: "
                 "RSS growth still held when the build returns)")
    return "\n".join(lines)


def plot(by_order: dict[str, list[dict[str, Any]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
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
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
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
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    if args.child:
        result = run_child(json.loads(args.child))
        Path(args.child_out).write_text(json.dumps(result, indent=2))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else ([2000, 5000] if args.quick else
                                                                       [10_000, 30_000, 100_000])
    orders = list(ORDERS) if args.order == "both" else [args.order]
    load_start = os.getloadavg()[0]
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

    info = machine_info("cpu")
    info["load_average_1m_start"] = load_start
    all_results = [r for results in by_order.values() for r in results]
    dim = all_results[0]["dim"]
    print(f"\nbuild_memory ({'quick' if args.quick else 'full'}): FAISS exact, tiny Llama hidden {dim}, "
          f"chunks of {args.chunk:,}, answers={'off' if args.no_answers else 'on'}; {info['cpu_model']}, "
          f"{info['usable_cores']} cores, load {load_start:.1f} at start")
    print(table(all_results))
    verdicts: dict[str, Any] = {}
    for order, results in by_order.items():
        fit = fit_excess(results)
        if fit is None:
            continue
        vector_per_doc = dim * 4
        flat = fit["slope_bytes_per_doc"] < args.flat_threshold * vector_per_doc
        # A run's fixed costs (torch's per-batch working set, allocator slack) swing by several MiB; the
        # slope means something only once the largest N's bookkeeping is well above that.
        judged = max(sizes) >= 10_000
        verdicts[order] = {**fit, "vector_bytes_per_doc": vector_per_doc,
                           "slope_vs_vector_bytes": fit["slope_bytes_per_doc"] / vector_per_doc,
                           "slope_vs_576d_vector_bytes": fit["slope_bytes_per_doc"] / (576 * 4), "flat": flat,
                           "judged": judged}
        verdict = ("FLAT" if flat else "GROWS with the corpus") if judged else "not judged: sizes too small"
        print(f"{order}: growth beyond the vectors rises {fit['slope_bytes_per_doc']:.0f} B per document "
              f"({fit['slope_bytes_per_doc'] / vector_per_doc:.2f}x the {vector_per_doc} B of a {dim}-d vector, "
              f"{fit['slope_bytes_per_doc'] / 2304:.2f}x a 576-d one) -> {verdict} "
              f"(threshold {args.flat_threshold:.0%} of a vector)")
    for order, results in traces.items():
        for r in results:
            t = r["tracemalloc"]
            if not t["snapshots"]:
                print(f"\ntracemalloc, {order}, N={r['n']:,}: no snapshot (Python memory never passed 1 MiB)")
                continue
            print(f"\ntracemalloc, {order}, N={r['n']:,}: Python memory (traced) peaked at "
                  f"{t['traced_peak_bytes'] / MIB:.1f} MiB above the baseline; at the last high-water snapshot "
                  f"({t['traced_at_snapshot_bytes'] / MIB:.1f} MiB) the largest allocation sites were:")
            for site in t["top_sites"][:8]:
                print(f"  {site['size_diff_bytes'] / MIB:>8.2f} MiB {site['count_diff']:>9,} blocks  {site['site']}")
            print("  largest by call stack (innermost first):")
            for stack in t["top_tracebacks"][:5]:
                print(f"  {stack['size_diff_bytes'] / MIB:>8.2f} MiB  " + " <- ".join(stack["stack_innermost_first"][:4]))
    if load_start > 0.5 * (info["usable_cores"] or 1):
        print(f"note: load average {load_start:.1f} on {info['usable_cores']} cores: timings are not reliable "
              "(memory figures are).")

    if not args.no_save:
        name = args.out or ("build_memory_quick" if args.quick else "build_memory")
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
        path = save_results(name, payload)
        png = RESULTS_DIR / f"{name}.png"
        plot(by_order, png, f"Index build peak memory, FAISS exact, tiny Llama (dim {dim})"
                            f"{' (quick)' if args.quick else ''}\n{info['cpu_model']}, {info['usable_cores']} cores")
        print(f"saved {path} and {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
