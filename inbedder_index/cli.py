"""``inbedder-index``: build, search and inspect instruction indexes from the shell.

Each subcommand is a few lines over the library. Errors print one line to stderr and exit
with status 2 (bad input) or 1 (anything else the library refused); nothing already stored is
touched, because files are read and checked before the index is opened for writing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InBedderError
from .readers import FORMATS, InputFileError, read_documents
from .threads import default_threads, set_threads

logger = logging.getLogger("inbedder_index.cli")


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _short(text: str, width: int = 70) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _emit(args: argparse.Namespace, payload: Any, human: str) -> None:
    print(json.dumps(payload, indent=2, ensure_ascii=False) if args.json else human)


def _open(args: argparse.Namespace, *, read_only: bool = False) -> Any:
    from .index import InstructionIndex

    if read_only and not (Path(args.index) / "corpus.sqlite").exists():
        raise InputFileError(f"no index at {args.index}; create one with: inbedder-index build {args.index} ...")
    kwargs: dict[str, Any] = {}
    if getattr(args, "max_length", None) is not None:
        kwargs["max_length"] = args.max_length
    for option in ("runtime", "quantize"):  # the encoder's forward pass (docs/encoder-and-models.md)
        if getattr(args, option, None) is not None:
            kwargs[option] = getattr(args, option)
    return InstructionIndex.open(
        args.index,
        model=getattr(args, "model", None),
        backend=getattr(args, "backend", None),
        qdrant_url=getattr(args, "qdrant_url", None),
        qdrant_api_key=getattr(args, "qdrant_api_key", None),
        hnsw=getattr(args, "hnsw", False),
        read_only=read_only,
        legacy_qdrant=args.legacy_qdrant,
        **kwargs,
    )


def _documents(args: argparse.Namespace) -> list[Any]:
    fields = [f.strip() for f in args.metadata_fields.split(",") if f.strip()] if args.metadata_fields else None
    return read_documents(args.input, format=args.format, text_field=args.text_field, id_field=args.id_field,
                          metadata_fields=fields)


def cmd_build(args: argparse.Namespace) -> None:
    documents = _documents(args)
    with _open(args) as index:
        if args.ray is None:
            encoded = len(index.upsert(documents))
            index.add_instructions(args.instruction, answers=not args.no_answers)
        else:
            from .distributed import build

            encoded = len(index.store_documents(documents))  # encoded on the cluster, not here
            build(index, args.instruction, address=None if args.ray is True else args.ray,
                  num_actors=args.ray_actors, answers=not args.no_answers, qdrant_api_key=args.qdrant_api_key)
        stats = index.stats()
    _emit(args, stats, f"{len(documents)} documents ({encoded} new or changed) indexed under "
                       f"{len(args.instruction)} instruction(s) in {args.index}")


def cmd_add(args: argparse.Namespace) -> None:
    documents = _documents(args)
    with _open(args) as index:
        added = index.upsert(documents) if args.upsert else index.add(documents)
        stats = index.stats()
    _emit(args, {"encoded": added, **stats}, f"{len(documents)} documents stored, {len(added)} encoded")


def _pairs(args: argparse.Namespace, option: str, shape: str) -> list[tuple[str, str]]:
    """The ``KEY=VALUE`` items of a repeatable option, split at the first ``=``."""
    pairs = []
    for item in getattr(args, option.lstrip("-").replace("-", "_")) or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputFileError(f"{option} {item!r} is not {shape}")
        pairs.append((key, value))
    return pairs


def _filter(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--filter FIELD=VALUE`` and ``--answer "INSTRUCTION=a,b"`` as one filter (see ``inbedder_index.search``)."""
    filters: dict[str, Any] = {key: _filter_value(value) for key, value in _pairs(args, "--filter", "FIELD=VALUE")}
    answers: dict[str, list[str]] = {}
    for instruction, listed in _pairs(args, "--answer", "INSTRUCTION=ANSWER[,ANSWER...]"):
        answers.setdefault(instruction, []).extend(answer.strip() for answer in listed.split(","))
    if answers:
        filters["$answer"] = answers
    return filters or None


def _queries(args: argparse.Namespace) -> dict[str, str]:
    """The query under each instruction: QUERY under every --instruction, and each --query-under."""
    if (args.query is None) != (not args.instruction):
        raise InputFileError("give QUERY together with --instruction (repeatable: the same text under each), "
                             "and/or --query-under INSTRUCTION=QUERY for each instruction")
    queries = dict.fromkeys(args.instruction or [], args.query)
    queries.update(_pairs(args, "--query-under", "INSTRUCTION=QUERY"))
    if not queries:
        raise InputFileError("nothing to search for: give QUERY --instruction INSTRUCTION, or --query-under "
                             "INSTRUCTION=QUERY (repeatable)")
    return queries


def cmd_search(args: argparse.Namespace) -> None:
    queries = _queries(args)
    weights = {key: _number(f"--weight {key}={value}", value) for key, value in
               _pairs(args, "--weight", "INSTRUCTION=WEIGHT")} or None
    filters = _filter(args)
    with _open(args, read_only=True) as index:
        if len(queries) == 1 and weights is None:
            [(instruction, query)] = queries.items()
            hits = index.search(query, instruction, k=args.k, filter=filters)
        else:
            hits = index.search_combined(queries, k=args.k, weights=weights, filter=filters)
    if len(queries) == 1:
        rows = [(h.id, f"{h.score:.4f}", h.answer or "", _short(h.text)) for h in hits]
        headers = ["id", "score", "answer", "text"]
    else:
        rows = [(h.id, f"{h.score:.4f}", *(f"{h.answers[i] or ''} ({h.scores[i]:.3f})" for i in queries),
                 _short(h.text, 50)) for h in hits]
        headers = ["id", "score", *(_short(i, 30) for i in queries), "text"]
    _emit(args, [h.__dict__ for h in hits], _table(rows, headers) if hits else "no hits")


def cmd_facets(args: argparse.Namespace) -> None:
    filters = _filter(args)
    with _open(args, read_only=True) as index:
        facets = index.facets(args.instruction, k=args.k, filter=filters)
    payload = {"instruction": args.instruction, "facets": [{"answer": a, "count": n} for a, n in facets]}
    _emit(args, payload, _table(facets, ["answer", "documents"]) if facets else "no answers")


def _number(option: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputFileError(f"{option}: {value!r} is not a number") from None


def _filter_value(value: str) -> Any:
    """``3``, ``true`` and ``["a", "b"]`` are JSON values; anything else is plain text."""
    try:
        return json.loads(value)
    except ValueError:
        return value


def cmd_list(args: argparse.Namespace) -> None:
    with _open(args, read_only=True) as index:
        stats = index.stats()
    rows = [(c["instruction"], c["count"], c["pending"], c["dim"], c["updated"]) for c in stats["collections"]]
    _emit(args, stats["collections"], _table(rows, ["instruction", "vectors", "pending", "dim", "updated"])
          if rows else "no instructions yet")


def cmd_drop(args: argparse.Namespace) -> None:
    with _open(args) as index:
        index.drop_instruction(args.instruction)
    _emit(args, {"dropped": args.instruction}, f"dropped {args.instruction!r}")


def cmd_info(args: argparse.Namespace) -> None:
    with _open(args, read_only=True) as index:
        stats = index.stats()
    model = stats["model"] or {}
    human = "\n".join([
        f"index       {stats['path']}",
        f"documents   {stats['documents']}",
        f"backend     {stats['backend']}{' at ' + stats['qdrant_url'] if stats['qdrant_url'] else ''}"
        f"{' (HNSW)' if stats['hnsw'] else ''}",
        f"model       {model.get('id', '-')} (fingerprint {model.get('fingerprint', '-')}, dim {model.get('dim', '-')})",
        f"collections {len(stats['collections'])}",
        *(f"warning     {c['instruction']!r}: {c['problem']}" for c in stats["collections"] if c["problem"]),
    ])
    _emit(args, stats, human)


def cmd_migrate(args: argparse.Namespace) -> None:
    from .migration import migrate_index

    report = migrate_index(args.index, args.target, backend=args.backend, qdrant_url=args.qdrant_url,
                           qdrant_api_key=args.qdrant_api_key, source_qdrant_api_key=args.source_qdrant_api_key,
                           legacy_qdrant=args.legacy_qdrant, hnsw=args.hnsw or None)
    where = f"the Qdrant server {report.qdrant_url}" if report.qdrant_url else report.backend
    human = "\n".join([
        f"{report.documents} documents and {sum(report.copied.values())} vectors under {len(report.copied)} "
        f"instruction(s) copied from {report.source} to {report.target} ({where})",
        *(f"warning     {instruction!r}: {count} documents have no up-to-date vector; the next write or "
          f"`inbedder-index build` finishes them" for instruction, count in report.pending.items() if count),
    ])
    _emit(args, report.__dict__, human)


def cmd_cluster(args: argparse.Namespace) -> None:
    from .cluster import cluster_index, plot_clusters

    with _open(args, read_only=True) as index:
        report, vectors, labels = cluster_index(index, args.instruction, args.k, seed=args.seed)
    if args.plot:
        plot_clusters(vectors, labels, report, args.plot)
    rows = [(c.label, c.size, ", ".join(f"{a} ({n})" for a, n in c.top_answers), ", ".join(c.top_words))
            for c in report.clusters]
    _emit(args, report.to_dict(), _table(rows, ["cluster", "size", "top answers", "top words"]))


def cmd_eval(args: argparse.Namespace) -> None:
    from . import evaluation

    if args.data_report:
        stats = evaluation.data_report(args.data_report)
        _emit(args, evaluation.data_report_payload(stats), evaluation.format_data_report(stats))
        return
    from .encoder import InBedder

    tasks = evaluation.eval_tasks(args.suite, args.task)
    reports = {}
    for model in args.model or [None]:
        embedder = InBedder(model) if model else InBedder()
        reports[embedder.model_id] = evaluation.evaluate(embedder, tasks)
    if args.minilm:
        reports["all-MiniLM-L6-v2 (no instruction)"] = evaluation.evaluate(evaluation.minilm_baseline(), tasks)
    if args.plot:
        evaluation.plot_report(reports, args.plot)
    _emit(args, evaluation.report_payload(reports), evaluation.format_evaluation(reports))


def cmd_train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    config = TrainConfig(
        base_model=args.base, data=args.data, output_dir=args.output, method=args.method, lora_rank=args.lora_rank,
        learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size, max_length=args.max_length,
        seed=args.seed, contrastive_weight=args.contrastive_weight, max_seconds=args.max_seconds,
        exclude_aspects=args.exclude_aspects, contrastive_every=args.contrastive_every,
        contrastive_batch_size=args.contrastive_batch_size, hard_negatives=args.hard_negatives,
        num_threads=args.threads, checkpoint_seconds=args.checkpoint_seconds, resume=args.resume,
    )
    folder = train(config)
    _emit(args, {"output": str(folder)}, f"saved to {folder}; load it with InBedder({str(folder)!r})")


def cmd_export(args: argparse.Namespace) -> None:
    from .encoder import InBedder
    from .models import DEFAULT_MODEL

    encoder = InBedder(args.model or DEFAULT_MODEL, runtime="onnx", quantize=args.quantize)
    entry = encoder.runtime.entry  # type: ignore[attr-defined]
    _emit(args, {"model": encoder.model_id, "fingerprint": encoder.fingerprint, "graph": str(entry)},
          f"{encoder.model_id} runs from {entry} (fingerprint {encoder.fingerprint}); on a CPU, encoding, search "
          "and serving now load neither PyTorch nor transformers")


def cmd_serve(args: argparse.Namespace) -> None:
    from .serve import Service, Settings, run

    settings = Settings(
        api_key=args.api_key or os.environ.get("INBEDDER_INDEX_API_KEY") or None,
        default_instruction=args.instruction, read_only=args.read_only, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_queue=args.max_queue, max_inputs=args.max_inputs,
        max_request_bytes=args.max_request_bytes, max_input_chars=args.max_input_chars,
        max_request_chars=args.max_request_chars, ui=not args.no_ui,
    )
    if settings.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("listening on %s without an API key: anyone who reaches this port can use it "
                       "(set --api-key or INBEDDER_INDEX_API_KEY)", args.host)
    kwargs = {key: getattr(args, key) for key in ("max_length", "runtime", "quantize") if getattr(args, key) is not None}
    service = Service.open(args.index, model=args.model, settings=settings, **kwargs)

    def ready(url: str) -> None:
        names = ", ".join(service.indexes) or "no indexes"
        page = f"; the explorer page is {url}/ui/" if settings.ui else ""
        print(f"serving {service.encoder.model_id} and {names} on {url}{' (read-only)' if args.read_only else ''}"
              f"{page}; Ctrl-C stops", file=sys.stderr, flush=True)

    try:
        run(service, host=args.host, port=args.port, verbose=args.verbose, on_ready=ready)
    finally:
        service.close()


def _index_arguments(parser: argparse.ArgumentParser, *, model: bool = True) -> None:
    parser.add_argument("index", help="the index folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--backend", choices=["faiss", "qdrant"], help="vector backend (default: faiss, or the index's)")
    parser.add_argument("--qdrant-url", help="a Qdrant server, e.g. http://localhost:6333 (default: embedded)")
    parser.add_argument("--qdrant-api-key", help="API key for the Qdrant server")
    parser.add_argument("--legacy-qdrant", action="store_true",
                        help="open an index kept in qdrant-client's old local storage, which unpickles its data "
                             "(only for folders you trust, to migrate them)")
    if model:
        parser.add_argument("--model", help="model name, hub id or folder (default: the index's model)")
        parser.add_argument("--max-length", type=int, help="token limit of a prompt (default 512)")
        _runtime_arguments(parser)


def _runtime_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runtime", choices=["torch", "onnx"],
                        help="forward pass: ONNX Runtime (the default on a CPU) or PyTorch (the default on a GPU)")
    parser.add_argument("--quantize", choices=["int8"], help="with ONNX Runtime: int8 weights (other vectors, "
                                                            "so an index built without it refuses it)")


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--filter", action="append", metavar="FIELD=VALUE", help="metadata filter (repeatable)")
    parser.add_argument("--answer", action="append", metavar="INSTRUCTION=ANSWER[,ANSWER...]",
                        help="keep documents whose stored answer under INSTRUCTION is one of these (compared without "
                             "case, extra spaces or trailing punctuation; repeatable)")


def _input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="documents: JSONL, CSV or plain text (one per line)")
    parser.add_argument("--format", choices=FORMATS, help="input format (default: from the file extension)")
    parser.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    parser.add_argument("--id-field", default="id", help="field holding the id (default: id; else the line number)")
    parser.add_argument("--metadata-fields", help="comma-separated fields to keep as metadata (default: all others)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inbedder-index", description=__doc__.split("\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("--threads", type=int, help="CPU threads for the model and FAISS (default: 1 on a machine "
                                                    "with at most 2 cores, else the libraries' own)")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="store documents and index them under one or more instructions")
    _index_arguments(build)
    _input_arguments(build)
    build.add_argument("--instruction", action="append", required=True, help="an instruction (repeatable)")
    build.add_argument("--hnsw", action="store_true", help="approximate HNSW collections (large corpora)")
    build.add_argument("--no-answers", action="store_true", help="do not store the model's short answers")
    build.add_argument("--ray", nargs="?", const=True, metavar="ADDRESS",
                       help="encode on a Ray cluster: its address ('auto', 'ray://HEAD:10001'), or none for a local "
                            "one (needs the 'ray' extra)")
    build.add_argument("--ray-actors", type=int, help="with --ray: encoder actors (default: one per GPU, else per CPU)")
    build.set_defaults(run=cmd_build)

    add = commands.add_parser("add", help="add documents; every instruction's collection is updated")
    _index_arguments(add)
    _input_arguments(add)
    add.add_argument("--upsert", action="store_true", help="replace documents whose id exists")
    add.set_defaults(run=cmd_add)

    search = commands.add_parser("search", help="search under an instruction, or several at once (combined)")
    _index_arguments(search)
    search.add_argument("query", nargs="?", help="the query, embedded under each --instruction")
    search.add_argument("--instruction", action="append",
                        help="an instruction to search under (repeatable: one score per instruction, summed)")
    search.add_argument("--query-under", action="append", metavar="INSTRUCTION=QUERY",
                        help="a query under its own instruction (repeatable), e.g. "
                             "--query-under 'How does the customer feel?=angry'; split at the first '='")
    search.add_argument("--weight", action="append", metavar="INSTRUCTION=WEIGHT",
                        help="an instruction's weight in a combined search (repeatable; default 1 each)")
    search.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    _filter_arguments(search)
    search.set_defaults(run=cmd_search)

    facets = commands.add_parser("facets", help="the most frequent answers under an instruction, with counts")
    _index_arguments(facets)
    facets.add_argument("--instruction", required=True)
    facets.add_argument("-k", "--k", type=int, default=20, help="number of answers (default 20)")
    _filter_arguments(facets)
    facets.set_defaults(run=cmd_facets)

    listing = commands.add_parser("list", help="list the instructions of an index")
    _index_arguments(listing, model=False)
    listing.set_defaults(run=cmd_list)

    drop = commands.add_parser("drop", help="drop one instruction's collection")
    _index_arguments(drop, model=False)
    drop.add_argument("--instruction", required=True)
    drop.set_defaults(run=cmd_drop)

    info = commands.add_parser("info", help="show what an index holds")
    _index_arguments(info, model=False)
    info.set_defaults(run=cmd_info)

    migrate = commands.add_parser("migrate", help="copy an index into a new folder on another backend "
                                                  "(FAISS, embedded Qdrant, a Qdrant server)")
    migrate.add_argument("index", help="the index folder to copy (never changed)")
    migrate.add_argument("target", help="the new index folder (rerun to finish an interrupted migration)")
    migrate.add_argument("--json", action="store_true", help="print JSON")
    migrate.add_argument("--backend", choices=["faiss", "qdrant"], help="the target's backend (default: the source's)")
    migrate.add_argument("--qdrant-url", help="the target's Qdrant server (default: embedded Qdrant in the folder)")
    migrate.add_argument("--qdrant-api-key", help="API key of the target's Qdrant server")
    migrate.add_argument("--source-qdrant-api-key", help="API key of the source's Qdrant server")
    migrate.add_argument("--hnsw", action="store_true", help="approximate HNSW FAISS collections (default: the source's)")
    migrate.add_argument("--legacy-qdrant", action="store_true",
                         help="the source is kept in qdrant-client's old local storage, which unpickles its data "
                              "(only for folders you trust)")
    migrate.set_defaults(run=cmd_migrate)

    cluster = commands.add_parser("cluster", help="k-means under one instruction, clusters summarised")
    _index_arguments(cluster, model=False)
    cluster.add_argument("--instruction", required=True)
    cluster.add_argument("-k", type=int, default=4, help="number of clusters (default 4)")
    cluster.add_argument("--seed", type=int, default=0)
    cluster.add_argument("--plot", help="also save a PNG scatter plot here")
    cluster.set_defaults(run=cmd_cluster)

    evaluate = commands.add_parser("eval", help="score models on instruction-following tasks")
    evaluate.add_argument("--model", action="append", help="model to score (repeatable; default: the default model)")
    evaluate.add_argument("--minilm", action="store_true", help="also score all-MiniLM-L6-v2, which ignores instructions")
    evaluate.add_argument("--task", action="append", help="a local JSONL/CSV task or a hub dataset id (default: bundled sets)")
    evaluate.add_argument("--suite", action="append", metavar="{project,fresh,heldout,all}",
                          help="bundled suite to run (repeatable; default: all, or none when --task is given)")
    evaluate.add_argument("--data-report", nargs="+", metavar="FILE",
                          help="instead of scoring models, report the answer distribution per aspect of QA training files")
    evaluate.add_argument("--plot", help="save a grouped bar chart PNG here")
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    evaluate.set_defaults(run=cmd_eval)

    training = commands.add_parser("train", help="fine-tune a causal or masked LM into an InBedder on QA records")
    training.add_argument("--data", action="append", required=True, help="QA JSONL (key/value/value_prefix), repeatable")
    training.add_argument("--base", default="smollm2-135m", help="base model name, hub id or folder")
    training.add_argument("--output", required=True, help="folder for the adapter or model")
    training.add_argument("--method", choices=["lora", "full"], default="lora")
    training.add_argument("--lora-rank", type=int, default=16)
    training.add_argument("--lr", type=float, default=3e-4)
    training.add_argument("--epochs", type=float, default=1.0)
    training.add_argument("--batch-size", type=int, default=8)
    training.add_argument("--max-length", type=int, default=256)
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--contrastive-weight", type=float, default=0.0,
                          help="weight of the answer-agreement contrastive objective (0: plain InBedder)")
    training.add_argument("--contrastive-every", type=int, default=1, metavar="N",
                          help="a contrastive batch on every N-th optimiser step (its cost is a second forward pass)")
    training.add_argument("--contrastive-batch-size", type=int, default=16)
    training.add_argument("--hard-negatives", type=float, default=0.5, metavar="SHARE",
                          help="share of contrastive negatives that agree with a positive on another aspect")
    training.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    training.add_argument("--checkpoint-seconds", type=float, default=300.0,
                          help="write a resumable checkpoint into OUTPUT/checkpoint this often")
    training.add_argument("--resume", action="store_true", help="continue from OUTPUT/checkpoint")
    training.add_argument("--max-seconds", type=float, help="stop (and save) after this long")
    training.add_argument("--exclude-aspects", type=lambda v: [a.strip() for a in v.split(",") if a.strip()], default=[],
                          metavar="A,B", help="leave out records whose aspect is listed (leave-aspects-out training)")
    training.add_argument("--json", action="store_true", help="print JSON")
    training.set_defaults(run=cmd_train)

    exporting = commands.add_parser("export", help="export a model to ONNX ahead of time (once per model: later "
                                                   "loads on a CPU need neither PyTorch nor transformers)")
    exporting.add_argument("model", nargs="?", help="model name, hub id or folder (default: the default model)")
    exporting.add_argument("--quantize", choices=["int8"], help="also make its int8 graph (other vectors)")
    exporting.add_argument("--json", action="store_true", help="print JSON")
    exporting.set_defaults(run=cmd_export)

    serve = commands.add_parser("serve", help="serve the model and indexes over HTTP (OpenAI-compatible embeddings)")
    serve.add_argument("index", nargs="*", help="index folders to serve (PATH or NAME=PATH; default name: the folder's)")
    serve.add_argument("--model", help="model name, hub id or folder (default: the first index's, else the default)")
    serve.add_argument("--max-length", type=int, help="token limit of a prompt (default: the index's, else 512)")
    _runtime_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: a free one)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $INBEDDER_INDEX_API_KEY, "
                                         "which, unlike an argument, other users cannot read in the process list)")
    serve.add_argument("--read-only", action="store_true", help="serve search only (no writer lock, no writes)")
    serve.add_argument("--no-ui", action="store_true", help="do not serve the explorer page at /ui/ (the API alone)")
    serve.add_argument("--instruction", help="default instruction of requests that name none")
    serve.add_argument("--max-batch", type=int, default=64, help="texts per encode batch (default 64)")
    serve.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5)")
    serve.add_argument("--max-queue", type=int, default=4096, help="texts waiting before 503s (default 4096)")
    serve.add_argument("--max-inputs", type=int, default=2048, help="texts or documents per request (default 2048)")
    serve.add_argument("--max-request-bytes", type=int, default=8 * 2**20, help="request body limit (default 8 MiB)")
    serve.add_argument("--max-input-chars", type=int, default=32_768,
                       help="characters of one text, query or document (default 32768)")
    serve.add_argument("--max-request-chars", type=int, default=2**20,
                       help="characters of all the texts of one request (default 1048576)")
    serve.set_defaults(run=cmd_serve)

    for sub in commands.choices.values():  # -v also after the subcommand
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details")
    return parser


def _quiet_output(verbose: bool) -> None:
    """Normal output is the answer: third-party deprecation notices and transformers' warnings
    appear only with --verbose (model-loading bars: see ``models``). Progress bars of long work
    (builds, encoding many texts) stay."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if verbose:
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is first imported
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", category=UserWarning,
                            module=r"(transformers|torch|peft|huggingface_hub|accelerate|qdrant_client|faiss)(\.|$)")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_output(args.verbose)
    try:
        set_threads(args.threads if args.threads is not None else default_threads())
        args.run(args)
    except (InputFileError, ValueError, TypeError, FileNotFoundError, NotADirectoryError) as error:
        print(f"inbedder-index {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (InBedderError, OSError, ImportError) as error:
        print(f"inbedder-index {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
