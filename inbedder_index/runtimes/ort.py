"""The ONNX Runtime runtime: the model's graph from the model cache, run on the CPU without PyTorch.

Graphs live in the model cache, ``<cache>/onnx/<fingerprint>-<kind>-<variant>/``, keyed by the
model's fingerprint (a digest of all its weights, its tokenizer and pooling): ``fp32`` is the
exported graph (``export``), ``int8-<settings tag>`` its dynamically quantised copy (int8
weights of the weight matmuls; ``Int8Settings`` says which), made from ``fp32`` without PyTorch.
Each entry holds the graph, the tokenizer (``tokenizer.json``) and ``GRAPH.json``: what the graph
takes and gives, the tokenizer's settings, every file's size and sha256, and a checksum of the
record itself.

An entry is built in a staging folder and renamed into place. Each load validates the record
(types, checksum, the names the inputs must have), the files' sizes, then their sha256 (while the
session loads), and finally the session's inputs against the record; anything that does not
validate is removed and rebuilt, never used. Only PyTorch can rebuild a float32 graph: without an
exporter ``load`` returns None and the encoder loads the model.

Importing this module imports neither torch nor transformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._util import import_optional
from ..adapters import file_lock, sha256_file
from ..threads import model_threads
from . import Step
from .tokenizer import TOKENIZER_FILE, FastTokenizer, TokenizerSpec

logger = logging.getLogger(__name__)

_FORMAT = 4  # bumped when the graph's inputs/outputs, the record or the export wrapper change
_RECORD = "GRAPH.json"
GRAPH_FILE = "model.onnx"
OPTIMIZED_FILE = "model.opt.onnx"  # the same graph after ONNX Runtime's optimisations, saved once
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Int8Settings:
    """Which weights dynamic int8 quantisation touches (activations are quantised per call, per tensor)."""

    per_channel: bool = True  # one scale per output column, not one per matrix
    reduce_range: bool = True  # 7-bit weights: no saturation in the u8 x s8 kernels of CPUs without VNNI
    float_modules: tuple[str, ...] = ()  # regexes on module paths ("mlp.down_proj", r"layers\.29\.") kept float32
    float_end_layers: int = 0  # the first and the last N layers keep float32 weights (models of > 4N layers)

    @property
    def tag(self) -> str:
        spec = json.dumps(asdict(self), sort_keys=True)
        return f"pc{int(self.per_channel)}-rr{int(self.reduce_range)}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


MLP_OUT = r"down_proj|fc2|(?<!attention\.)output\.dense"  # the MLP's output projection (Llama, OPT, RoBERTa)
# What quantize="int8" means, chosen by benchmarks/int8_quality.py on the default model: int8 everywhere
# loses 0.05-0.1 of the feel/want harmonic mean; the MLP output projections (whose inputs carry the
# largest activations) and the two first and last layers in float32 keep it within 0.02 of float32.
INT8 = Int8Settings(float_modules=(MLP_OUT,), float_end_layers=2)


def int8_settings(quantize: Any) -> Int8Settings | None:
    """``quantize`` ("int8", an ``Int8Settings`` or None) as settings."""
    return INT8 if quantize == "int8" else quantize if isinstance(quantize, Int8Settings) else None


def io_names(kind: str, n_layers: int) -> tuple[list[str], list[str]]:
    """The graph's input and output names for a model of ``kind`` with ``n_layers`` cached layers."""
    if kind == "masked":
        return ["input_ids", "attention_mask", "pick"], ["states", "logits"]
    past = [f"past_{part}_{layer}" for layer in range(n_layers) for part in ("key", "value")]
    present = [f"present_{part}_{layer}" for layer in range(n_layers) for part in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", "pick", *past], ["states", "logits", *present]


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class GraphRecord:
    """A validated ``GRAPH.json``."""

    kind: str
    fingerprint: str
    dim: int
    past_shapes: tuple[tuple[int, int], ...]  # (key/value heads, head size) per layer; () for masked LMs
    tokenizer: TokenizerSpec
    files: dict[str, dict[str, Any]]  # name -> {"size", "sha256"}
    data: dict[str, Any]  # the whole record (exporter, probe cosine, int8 settings, versions)

    @property
    def inputs(self) -> list[str]:
        return io_names(self.kind, len(self.past_shapes))[0]

    @property
    def outputs(self) -> list[str]:
        return io_names(self.kind, len(self.past_shapes))[1]


def _checksum(data: dict[str, Any]) -> str:
    body = {key: value for key, value in data.items() if key != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _positive(value: Any) -> bool:
    return type(value) is int and value > 0


def parse_record(data: Any, fingerprint: str, kind: str) -> GraphRecord:
    """``data`` (a loaded ``GRAPH.json``) as a record of this model's graph, or ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError(f"{_RECORD} holds {type(data).__name__}, not an object")
    if data.get("format") != _FORMAT:
        raise ValueError(f"{_RECORD} is from another version of this library")
    if data.get("checksum") != _checksum(data):
        raise ValueError(f"{_RECORD} does not match its checksum (edited or damaged)")
    if data.get("fingerprint") != fingerprint or data.get("kind") != kind:
        raise ValueError(f"{_RECORD} describes another model")
    shapes = data.get("past_shapes")
    if not isinstance(shapes, list) or not all(isinstance(s, list) and len(s) == 2 and all(map(_positive, s))
                                               for s in shapes) or (kind == "causal") != bool(shapes):
        raise ValueError(f"{_RECORD} has no valid past_shapes")
    names = io_names(kind, len(shapes))
    if data.get("inputs") != names[0] or data.get("outputs") != names[1]:
        raise ValueError(f"{_RECORD} names other inputs or outputs than this library's graphs have")
    if not _positive(data.get("dim")):
        raise ValueError(f"{_RECORD} has no valid dim")
    files = data.get("files")
    if not isinstance(files, dict) or GRAPH_FILE not in files or TOKENIZER_FILE not in files or not all(
            isinstance(name, str) and name == Path(name).name and not name.startswith(".") and isinstance(item, dict)
            and type(item.get("size")) is int and item["size"] >= 0 and isinstance(item.get("sha256"), str)
            and _HEX.fullmatch(item["sha256"]) for name, item in files.items()):
        raise ValueError(f"{_RECORD} lists its files wrongly")
    if not isinstance(data.get("optimized_by", ""), str):
        raise ValueError(f"{_RECORD} has no valid optimized_by")
    spec = TokenizerSpec.from_record(data.get("tokenizer"))
    return GraphRecord(kind, fingerprint, data["dim"], tuple((h, d) for h, d in shapes), spec, files, data)


def _read_record(entry: Path, fingerprint: str, kind: str) -> tuple[GraphRecord | None, str | None]:
    """The entry's record if the quick checks pass (a valid record, every file at its size), else the problem."""
    try:
        data = json.loads((entry / _RECORD).read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as error:
        return None, f"unreadable {_RECORD} ({error})"
    try:
        record = parse_record(data, fingerprint, kind)
    except ValueError as error:
        return None, str(error)
    for name, expected in record.files.items():
        file = entry / name
        size = file.stat().st_size if file.is_file() else None
        if size != expected["size"]:
            return None, f"{name} has {size} bytes, {expected['size']} were written"
    return record, None


def _content_problem(entry: Path, record: GraphRecord) -> str | None:
    for name, expected in record.files.items():
        if sha256_file(entry / name) != expected["sha256"]:
            return f"{name} does not match its recorded sha256"
    return None


def _write_entry(entry: Path, build: Callable[[Path], dict[str, Any]], fingerprint: str) -> None:
    """``build(staging) -> record`` into a staging folder, then the folder renamed into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        record = build(staging)
        record.update(format=_FORMAT, fingerprint=fingerprint, files={p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
                                             for p in sorted(staging.iterdir()) if p.is_file()})
        record["checksum"] = _checksum(record)
        (staging / _RECORD).write_text(json.dumps(record, indent=2))
        shutil.rmtree(entry, ignore_errors=True)
        staging.replace(entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class _NoExporter(Exception):
    """A float32 graph must be (re)built, and only PyTorch can export it."""


def _ensure(entry: Path, build: Callable[[Path], dict[str, Any]] | None, what: str, fingerprint: str, kind: str,
            *, check_content: bool) -> None:
    """Build ``entry`` unless it is complete and matches its record: sizes always, sha256 too with
    ``check_content`` (an entry about to be opened is hashed while its session loads)."""

    def problem() -> str | None:
        record, issue = _read_record(entry, fingerprint, kind)
        return issue if issue or not check_content else _content_problem(entry, record)  # type: ignore[arg-type]

    if problem() is None:
        return
    if build is None:
        raise _NoExporter
    with file_lock(entry.parent / f".{entry.name}.lock"):
        issue = problem()  # another process may have built it while we waited
        if issue is None:
            return
        if issue != "missing":
            logger.warning("the ONNX graph cache entry %s is unusable (%s); rebuilding it", entry, issue)
        logger.info("%s into %s (once per model; later loads read it)", what, entry)
        _write_entry(entry, build, fingerprint)


def _session_problem(session: Any, record: GraphRecord) -> str | None:
    """What the loaded graph takes that its record does not say (an altered record or graph)."""
    inputs = {item.name: item.shape for item in session.get_inputs()}
    if list(inputs) != record.inputs or [item.name for item in session.get_outputs()] != record.outputs:
        return f"the graph's inputs or outputs differ from {_RECORD}"
    for index, (heads, size) in enumerate(record.past_shapes):
        for part in ("key", "value"):
            shape = inputs[f"past_{part}_{index}"]
            if len(shape) != 4 or shape[1] != heads or shape[3] != size:
                return f"past_{part}_{index} has shape {shape}, {_RECORD} says (*, {heads}, *, {size})"
    return None


def optimize_graph(folder: Path) -> str:
    """Apply ONNX Runtime's graph optimisations once and save the result beside the graph, so that
    sessions load it as it is (on the default model, a second less of every cold start); the
    version of ONNX Runtime that made it, which alone loads it without optimising again."""
    ort = import_optional("onnxruntime", "onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED  # not hardware-specific
    options.optimized_model_filepath = str(folder / OPTIMIZED_FILE)
    options.log_severity_level = 3
    ort.InferenceSession(str(folder / GRAPH_FILE), options, providers=["CPUExecutionProvider"])
    return str(ort.__version__)


def open_session(folder: Path, record: dict[str, Any], options: Any) -> Any:
    """A session of the optimised graph when this ONNX Runtime made it, else of the graph, optimised now."""
    ort = import_optional("onnxruntime", "onnx")
    optimized = record.get("optimized_by") == ort.__version__ and (folder / OPTIMIZED_FILE).is_file()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_DISABLE_ALL if optimized
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    return ort.InferenceSession(str(folder / (OPTIMIZED_FILE if optimized else GRAPH_FILE)), options,
                                providers=["CPUExecutionProvider"])


def _open(entry: Path, ort: Any, options: Any, fingerprint: str, kind: str) -> tuple[Any, GraphRecord | None, str | None]:
    """The session of an entry whose files match their record, hashed while the session loads
    (both release the GIL); else ``(None, None, problem)``."""
    record, problem = _read_record(entry, fingerprint, kind)
    if record is None:
        return None, None, problem
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-onnx") as pool:
        checking = pool.submit(_content_problem, entry, record)
        try:
            session, error = open_session(entry, record.data, options), None
        except Exception as failure:  # a damaged file can break the load: the check says why
            session, error = None, failure
        problem = checking.result()
    if problem is None and error is not None:
        raise error
    if problem is None:
        problem = _session_problem(session, record)
    return (session, record, None) if problem is None else (None, None, problem)


# --------------------------------------------------------------------------- quantisation


def _module_path(node: Any) -> str:
    """The module a node came from: the dynamo exporter's scope metadata, else the TorchScript node name."""
    scope = next((p.value for p in node.metadata_props if p.key == "namespace"), None)
    if scope is not None:
        modules = [part.split(":")[0].strip() for part in scope.split("/") if ": aten." not in part]
        return modules[-1] if modules else ""
    return ".".join(part for part in node.name.split("/")[1:-1] if part)  # "/backbone/layers.0/mlp/down_proj/MatMul"


def _weight_matmuls(graph: Any) -> list[tuple[str, str]]:
    """(node name, module path) of every MatMul whose second input is a weight."""
    weights = {init.name for init in graph.initializer}
    return [(node.name, _module_path(node)) for node in graph.node
            if node.op_type == "MatMul" and node.input[1] in weights]


def _excluded(matmuls: list[tuple[str, str]], settings: Int8Settings) -> list[str]:
    """The weight matmuls that ``settings`` keeps in float32."""
    layer_of = {name: int(m.group(1)) for name, path in matmuls if (m := re.search(r"\.(\d+)\.", path))}
    n_layers = max(layer_of.values(), default=-1) + 1
    ends = settings.float_end_layers if n_layers > 4 * settings.float_end_layers else 0  # most layers stay int8
    return [name for name, path in matmuls
            if any(re.search(pattern, path) for pattern in settings.float_modules)
            or (ends and name in layer_of and not ends <= layer_of[name] < n_layers - ends)]


def quantize_graph(source: Path, folder: Path, settings: Int8Settings, record: GraphRecord) -> dict[str, Any]:
    """Dynamic int8 weights of ``source``'s weight matmuls into ``folder`` (activations stay float between
    ops); the LM head (a Gemm) stays float32. No PyTorch needed."""
    onnx = import_optional("onnx", "onnx")
    quantization = import_optional("onnxruntime.quantization", "onnx")
    graph = onnx.load(str(source / GRAPH_FILE), load_external_data=False).graph
    matmuls = _weight_matmuls(graph)
    excluded = _excluded(matmuls, settings)
    quantization.quantize_dynamic(
        str(source / GRAPH_FILE), str(folder / GRAPH_FILE), weight_type=quantization.QuantType.QInt8,
        per_channel=settings.per_channel, reduce_range=settings.reduce_range, op_types_to_quantize=["MatMul"],
        nodes_to_exclude=excluded, use_external_data_format=True,
        extra_options={"MatMulConstBOnly": True},  # attention's activation x activation products stay float
    )
    shutil.copyfile(source / TOKENIZER_FILE, folder / TOKENIZER_FILE)
    keep = ("kind", "dim", "inputs", "outputs", "past_shapes", "tokenizer", "exporter", "torch")
    return {key: record.data[key] for key in keep if key in record.data} | {
        "int8": asdict(settings), "quantized_matmuls": len(matmuls) - len(excluded), "float_matmuls": len(excluded),
        "optimized_by": optimize_graph(folder)}


# --------------------------------------------------------------------------- the runtime


class OnnxRuntime:
    """A model's graph in ONNX Runtime on the CPU, with the tokenizer that travelled with it."""

    name = "onnx"

    def __init__(self, session: Any, record: GraphRecord, entry: Path, settings: Int8Settings | None,
                 threads: int) -> None:
        self.session = session
        self.record = record  # what GRAPH.json says: inputs, outputs, tokenizer, int8 settings, probe cosine
        self.entry = entry
        self.settings = settings
        self.quantize = "int8" if settings else None
        self.kind = record.kind
        self.dim = record.dim
        self.threads = threads
        self.tokenizer = FastTokenizer(entry, record.tokenizer)
        self._past_inputs = record.inputs[4:]
        self._present_outputs = record.outputs[2:]

    @property
    def vector_tag(self) -> str | None:
        return f"onnx-int8:{self.settings.tag}" if self.settings else None

    def forward(
        self,
        ids: np.ndarray,
        mask: np.ndarray,
        pick: np.ndarray,
        *,
        positions: np.ndarray | None = None,
        past: Any = None,
        keep: bool = False,
        tokens: bool = False,
    ) -> Step:
        feed = {"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                "attention_mask": np.ascontiguousarray(mask, dtype=np.int64),
                "pick": np.ascontiguousarray(pick, dtype=np.int64)}
        wanted = ["states", "logits"] if tokens else ["states"]
        if self.kind == "causal":
            batch, width = ids.shape
            if past is None:
                past = [np.zeros((batch, heads, 0, size), dtype=np.float32)
                        for heads, size in self.record.past_shapes for _ in ("key", "value")]
            if positions is None:
                start = past[0].shape[2]
                positions = np.broadcast_to(np.arange(start, start + width), (batch, width))
            feed["position_ids"] = np.ascontiguousarray(positions, dtype=np.int64)
            feed.update(zip(self._past_inputs, past))
            if keep:
                wanted += self._present_outputs
        out = self.session.run(wanted, feed)
        greedy = out[1].argmax(-1) if tokens else None
        return Step(out[0], greedy, tuple(out[2 if tokens else 1:]) if keep else None)

    def crop(self, cache: Any, length: int) -> Any:
        return tuple(t[:, :, :length] for t in cache)


def graph_entry(root: Path, fingerprint: str, kind: str, settings: Int8Settings | None) -> Path:
    variant = f"int8-{settings.tag}" if settings else "fp32"
    return root / "onnx" / f"{fingerprint}-{kind}-{variant}"


def cached(root: Path, fingerprint: str, kind: str, *, quantize: Any = None,
           threads: int | None = None) -> OnnxRuntime | None:
    """The graph of the model with this fingerprint from the model cache at ``root``, without PyTorch:
    None where the float32 graph is missing or unusable (only an export can rebuild it)."""
    try:
        return _load(root, fingerprint, kind, quantize=quantize, threads=threads, export=None)
    except _NoExporter:
        return None


def load(root: Path, fingerprint: str, kind: str, *, quantize: Any = None, threads: int | None = None,
         export: Callable[[Path], dict[str, Any]]) -> OnnxRuntime:
    """The graph of the model with this fingerprint from the model cache at ``root``, (re)built when
    missing or unusable: the float32 one by ``export(staging) -> record`` (PyTorch), an int8 one by
    quantising the float32 graph."""
    return _load(root, fingerprint, kind, quantize=quantize, threads=threads, export=export)


def _load(root: Path, fingerprint: str, kind: str, *, quantize: Any, threads: int | None,
          export: Callable[[Path], dict[str, Any]] | None) -> OnnxRuntime:
    ort = import_optional("onnxruntime", "onnx")
    settings = int8_settings(quantize)
    fp32 = graph_entry(root, fingerprint, kind, None)
    entry = graph_entry(root, fingerprint, kind, settings)

    def quantise(staging: Path) -> dict[str, Any]:
        _ensure(fp32, export, "exporting the model to ONNX", fingerprint, kind, check_content=True)
        record, problem = _read_record(fp32, fingerprint, kind)
        if record is None:
            raise RuntimeError(f"the ONNX graph {fp32} changed while it was being quantised ({problem}); retry")
        return quantize_graph(fp32, staging, settings, record)  # type: ignore[arg-type]

    build, what = (quantise, "quantising the ONNX graph to int8") if settings else (export, "exporting the model to ONNX")
    threads = threads or model_threads() or 0  # 0: ONNX Runtime's default (the physical cores)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    problem = None
    for attempt in (1, 2):
        _ensure(entry, build, what, fingerprint, kind, check_content=False)
        session, record, problem = _open(entry, ort, options, fingerprint, kind)
        if session is not None:
            logger.info("running the ONNX graph in %s (%s threads)", entry, threads or "default")
            return OnnxRuntime(session, record, entry, settings, threads)  # type: ignore[arg-type]
        if attempt == 1:
            logger.warning("the ONNX graph cache entry %s is unusable (%s); rebuilding it", entry, problem)
            with file_lock(entry.parent / f".{entry.name}.lock"):
                shutil.rmtree(entry, ignore_errors=True)
    raise RuntimeError(f"the ONNX graph rebuilt in {entry} still fails its check ({problem}); "
                       f"remove that folder and retry, or use runtime='torch'")
