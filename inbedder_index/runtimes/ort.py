"""The ONNX Runtime runtime: the backbone exported once per model, run on the CPU.

The graph holds the backbone only (no LM head): inputs ``input_ids``, ``attention_mask`` and, for
causal models, ``position_ids`` and each layer's past keys/values; outputs ``last_hidden_state``
and, for causal models, each layer's present keys/values. Batch, sequence and past lengths are
dynamic, so one graph serves the single pass (an empty past), the shared-prefix suffixes and the
answer tokens.

Exported graphs live in the model cache, ``<cache>/onnx/<fingerprint>-<kind>-<variant>/``, keyed
by the model's fingerprint: ``fp32`` is the exported graph, ``int8-<settings tag>`` its dynamically
quantised copy (int8 weights of the weight matmuls; ``Int8Settings`` says which). An entry is
built in a staging folder and renamed into place, with ``GRAPH.json`` recording every file's
size and sha256; each load checks them (while the session loads) and rebuilds an entry that does
not match, so a killed export or a damaged file is never used.

Export checks itself: the graph's states on a probe batch must match PyTorch's before the entry
is written.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..adapters import file_lock, sha256_file
from ..backends.base import import_optional
from ..models import Kind, cache_root
from .pytorch import cache_argument, returned_cache

logger = logging.getLogger(__name__)

_FORMAT = 1  # bumped when the graph's inputs/outputs or the export wrapper change
_RECORD = "GRAPH.json"
_GRAPH = "model.onnx"
_EXPORT_MIN_COSINE = 0.9999  # the probe batch: exported graph against the PyTorch backbone


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


class _CausalGraph(torch.nn.Module):
    """The backbone with its cache as flat tensors: (ids, mask, positions, k0, v0, k1, ...) -> (states, k0', v0', ...)."""

    def __init__(self, backbone: torch.nn.Module, config: Any) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=True, **{cache_argument(self.backbone): cache})
        flat = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
        return (out.last_hidden_state, *flat)


class _EncoderGraph(torch.nn.Module):
    """A masked LM's backbone: (ids, mask) -> states."""

    def __init__(self, backbone: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


# --------------------------------------------------------------------------- cache entries


def _files(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.name: {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(folder.iterdir()) if p.is_file() and p.name != _RECORD}


def _read_record(entry: Path) -> tuple[dict[str, Any] | None, str | None]:
    """The entry's record if the quick checks pass (record readable, every file at its size), else the problem."""
    try:
        record = json.loads((entry / _RECORD).read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as error:
        return None, f"unreadable {_RECORD} ({error})"
    if record.get("format") != _FORMAT or not isinstance(record.get("files"), dict):
        return None, f"{_RECORD} is from another version of this library"
    for name, expected in record["files"].items():
        file = entry / name
        size = file.stat().st_size if file.is_file() else None
        if size != expected.get("size"):
            return None, f"{name} has {size} bytes, {expected.get('size')} were written"
    return record, None


def _content_problem(entry: Path, record: dict[str, Any]) -> str | None:
    for name, expected in record["files"].items():
        if sha256_file(entry / name) != expected.get("sha256"):
            return f"{name} does not match its recorded sha256"
    return None


def _write_entry(entry: Path, build: Any) -> None:
    """``build(staging) -> record`` into a staging folder, then the folder renamed into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        record = build(staging)
        record.update(format=_FORMAT, files=_files(staging))
        (staging / _RECORD).write_text(json.dumps(record, indent=2))
        shutil.rmtree(entry, ignore_errors=True)
        staging.replace(entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _ensure(entry: Path, build: Any, what: str, *, check_content: bool) -> None:
    """Build ``entry`` unless it is complete and matches its record: sizes always, sha256 too
    with ``check_content`` (an entry about to be opened is hashed while its session loads)."""

    def problem() -> str | None:
        record, issue = _read_record(entry)
        return issue if issue or not check_content else _content_problem(entry, record)  # type: ignore[arg-type]

    if problem() is None:
        return
    with file_lock(entry.parent / f".{entry.name}.lock"):
        issue = problem()  # another process may have built it while we waited
        if issue is None:
            return
        if issue != "missing":
            logger.warning("the ONNX graph cache entry %s is unusable (%s); rebuilding it", entry, issue)
        logger.info("%s into %s (once per model; later loads read it)", what, entry)
        _write_entry(entry, build)


def _open(entry: Path, ort: Any, options: Any) -> tuple[Any, dict[str, Any], str | None]:
    """The session of an entry whose files match their record, hashed while the session loads
    (both release the GIL); else ``(None, {}, problem)``."""
    record, problem = _read_record(entry)
    if record is None:
        return None, {}, problem
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="verify-onnx") as pool:
        checking = pool.submit(_content_problem, entry, record)
        try:
            session, error = ort.InferenceSession(str(entry / _GRAPH), options, providers=["CPUExecutionProvider"]), None
        except Exception as failure:  # a damaged file can break the load: the check says why
            session, error = None, failure
        problem = checking.result()
    if problem is None and error is not None:
        raise error
    return (session, record, None) if problem is None else (None, {}, problem)


# --------------------------------------------------------------------------- export and quantisation


def _probe(model: torch.nn.Module, kind: Kind) -> tuple[tuple[torch.Tensor, ...], list[tuple[int, ...]]]:
    """Example inputs for the export (2 rows, 5 new tokens after 3 past ones, one row right-padded)
    and each past tensor's shape without batch and length (heads, head_dim)."""
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (2, 8), generator=generator)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 6:] = 0
    if kind == "masked":
        return (ids, mask), []
    with torch.inference_mode():
        cache = returned_cache(model.base_model(input_ids=ids[:, :3], attention_mask=mask[:, :3], use_cache=True))
    past = [t.clone() for layer in cache.layers for t in (layer.keys, layer.values)]
    positions = torch.arange(3, 8)[None, :].expand(2, -1).contiguous()
    return (ids[:, 3:], mask, positions, *past), [tuple(t.shape[1::2]) for t in past]


def _io_names(kind: Kind, n_past: int) -> tuple[list[str], list[str]]:
    if kind == "masked":
        return ["input_ids", "attention_mask"], ["last_hidden_state"]
    layers = range(n_past // 2)
    past = [f"past_{part}_{layer}" for layer in layers for part in ("key", "value")]
    present = [f"present_{part}_{layer}" for layer in layers for part in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["last_hidden_state", *present]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's and quantiser's progress lines, warnings and prints (the quantiser logs
    through the root logger) out of the user's log: they describe our graph, not their data."""
    loggers = [logging.getLogger(name) for name in ("", "torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, level in zip(loggers, levels):
            log.setLevel(level)


def _min_cosine(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    a, b = a[mask.astype(bool)].astype(np.float64), b[mask.astype(bool)].astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)
    return float(cos.min())


def export_graph(model: torch.nn.Module, kind: Kind, folder: Path) -> dict[str, Any]:
    """Export ``model``'s backbone into ``folder/model.onnx`` (+ its weights file) and check it; the record."""
    import_optional("onnxscript", "onnx")  # the dynamo exporter's translator
    ort = import_optional("onnxruntime", "onnx")
    args, past_shapes = _probe(model, kind)
    names = _io_names(kind, len(past_shapes))
    auto = torch.export.Dim.DYNAMIC
    if kind == "masked":
        wrapper: torch.nn.Module = _EncoderGraph(model.base_model)
        dynamic: tuple[Any, ...] = ({0: auto, 1: auto}, {0: auto, 1: auto})
    else:
        wrapper = _CausalGraph(model.base_model, model.config)
        dynamic = ({0: auto, 1: auto},) * 3 + (tuple({0: auto, 2: auto} for _ in past_shapes),)
    with torch.inference_mode(False), torch.no_grad():
        with _quiet():
            program = torch.onnx.export(wrapper.eval(), args, dynamic_shapes=dynamic, input_names=names[0],
                                        output_names=names[1], dynamo=True, verbose=False)
        expected = wrapper(*args)
    program.save(str(folder / _GRAPH), external_data=True)
    session = ort.InferenceSession(str(folder / _GRAPH), providers=["CPUExecutionProvider"])
    got = session.run(["last_hidden_state"], dict(zip(names[0], (a.numpy() for a in args))))[0]
    states = (expected[0] if isinstance(expected, tuple) else expected).numpy()
    new_mask = args[1][:, -states.shape[1]:].numpy()
    cosine = _min_cosine(got, states, new_mask)
    if cosine < _EXPORT_MIN_COSINE:
        raise RuntimeError(f"the ONNX export of this model does not match PyTorch (min cosine {cosine:.6f} on a "
                           f"probe batch); use runtime='torch' for it")
    return {"kind": kind, "inputs": names[0], "outputs": names[1], "past_shapes": past_shapes,
            "probe_min_cosine": cosine, "torch": torch.__version__, "onnxruntime": ort.__version__}


def _weight_matmuls(graph: Any) -> list[tuple[str, str]]:
    """(node name, module path) of every MatMul whose second input is a weight, from the exporter's scopes."""
    weights = {init.name for init in graph.initializer}
    found = []
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in weights:
            continue
        scope = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
        modules = [part.split(":")[0].strip() for part in scope.split("/") if ": aten." not in part]
        found.append((node.name, modules[-1] if modules else ""))
    return found


def _excluded(matmuls: list[tuple[str, str]], settings: Int8Settings) -> list[str]:
    """The weight matmuls that ``settings`` keeps in float32."""
    layer_of = {name: int(m.group(1)) for name, path in matmuls if (m := re.search(r"\.(\d+)\.", path))}
    n_layers = max(layer_of.values(), default=-1) + 1
    ends = settings.float_end_layers if n_layers > 4 * settings.float_end_layers else 0  # most layers stay int8
    return [name for name, path in matmuls
            if any(re.search(pattern, path) for pattern in settings.float_modules)
            or (ends and name in layer_of and not ends <= layer_of[name] < n_layers - ends)]


def quantize_graph(source: Path, folder: Path, settings: Int8Settings) -> dict[str, Any]:
    """Dynamic int8 weights of ``source``'s weight matmuls into ``folder`` (activations stay float between ops)."""
    onnx = import_optional("onnx", "onnx")
    quantization = import_optional("onnxruntime.quantization", "onnx")
    graph = onnx.load(str(source / _GRAPH), load_external_data=False).graph
    matmuls = _weight_matmuls(graph)
    excluded = _excluded(matmuls, settings)
    with _quiet():
        quantization.quantize_dynamic(
            str(source / _GRAPH), str(folder / _GRAPH), weight_type=quantization.QuantType.QInt8,
            per_channel=settings.per_channel, reduce_range=settings.reduce_range, op_types_to_quantize=["MatMul"],
            nodes_to_exclude=excluded, use_external_data_format=True,
            extra_options={"MatMulConstBOnly": True},  # attention's activation x activation products stay float
        )
    record = json.loads((source / _RECORD).read_text())
    return {key: record[key] for key in ("kind", "inputs", "outputs", "past_shapes", "torch")} | {
        "int8": asdict(settings), "quantized_matmuls": len(matmuls) - len(excluded), "float_matmuls": len(excluded)}


# --------------------------------------------------------------------------- the runtime


class OnnxRuntime:
    """``model``'s backbone in ONNX Runtime on the CPU, from the cache entry of its fingerprint."""

    name = "onnx"

    def __init__(
        self,
        model: torch.nn.Module,
        kind: Kind,
        *,
        fingerprint: str,
        quantize: str | Int8Settings | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
    ) -> None:
        ort = import_optional("onnxruntime", "onnx")
        threads = threads or torch.get_num_threads()
        self.kind = kind
        self.settings = INT8 if quantize == "int8" else quantize if isinstance(quantize, Int8Settings) else None
        self.quantize = "int8" if self.settings else None
        root = cache_root(cache_dir) / "onnx"
        fp32 = root / f"{fingerprint}-{kind}-fp32"

        def export(staging: Path) -> dict[str, Any]:
            return export_graph(model, kind, staging)

        def quantise(staging: Path) -> dict[str, Any]:
            _ensure(fp32, export, "exporting the model to ONNX", check_content=True)
            return quantize_graph(fp32, staging, self.settings)  # type: ignore[arg-type]

        build, what = (quantise, "quantising the ONNX graph to int8") if self.settings else (export, "exporting the model to ONNX")
        self.entry = root / f"{fingerprint}-{kind}-int8-{self.settings.tag}" if self.settings else fp32
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
        for attempt in (1, 2):
            _ensure(self.entry, build, what, check_content=False)
            session, record, problem = _open(self.entry, ort, options)
            if session is not None:
                break
            if attempt == 2:
                raise RuntimeError(f"the ONNX graph rebuilt in {self.entry} still fails its check ({problem}); "
                                   f"remove that folder and retry, or use runtime='torch'")
            logger.warning("the ONNX graph cache entry %s is unusable (%s); rebuilding it", self.entry, problem)
            with file_lock(root / f".{self.entry.name}.lock"):
                shutil.rmtree(self.entry, ignore_errors=True)
        self.session = session
        self.record = record  # what GRAPH.json says: inputs, outputs, int8 settings, probe cosine, versions
        self.inputs: list[str] = record["inputs"]
        self.outputs: list[str] = record["outputs"]
        self._past_shapes = [tuple(shape) for shape in record["past_shapes"]]
        self.threads = threads

    @property
    def vector_tag(self) -> str | None:
        return f"onnx-int8:{self.settings.tag}" if self.settings else None

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        past: Any = None,
        keep: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        feed = {"input_ids": ids.cpu().numpy(), "attention_mask": mask.cpu().numpy()}
        if self.kind == "masked":
            return torch.from_numpy(self.session.run(["last_hidden_state"], feed)[0]), None
        batch, width = ids.shape
        if past is None:
            past = [np.zeros((batch, heads, 0, dim), dtype=np.float32) for heads, dim in self._past_shapes]
        if positions is None:
            start = past[0].shape[2] if past else 0
            positions = torch.arange(start, start + width)[None, :].expand(batch, -1)
        feed["position_ids"] = np.ascontiguousarray(positions.cpu().numpy())
        feed.update(zip(self.inputs[3:], past))
        out = self.session.run(self.outputs if keep else ["last_hidden_state"], feed)
        return torch.from_numpy(out[0]), tuple(out[1:]) if keep else None

    def crop(self, cache: Any, length: int) -> Any:
        return tuple(t[:, :, :length] for t in cache)
