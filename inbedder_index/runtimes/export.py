"""PyTorch model -> ONNX graph (the one place that exports), checked against PyTorch before it is kept.

The graph runs the whole model that encoding and answers need, and nothing they do not:

- inputs ``input_ids``, ``attention_mask``, (causal) ``position_ids``, ``pick`` (batch, picks:
  the columns to read) and (causal) each layer's ``past_key_<i>`` / ``past_value_<i>``;
- outputs ``states`` (batch, picks, dim: the last layer's states at the picked columns),
  ``logits`` (batch, picks, vocabulary: the LM head there) and (causal) each layer's
  ``present_key_<i>`` / ``present_value_<i>``.

Batch, sequence, pick and past lengths are dynamic, so one graph serves the single pass (an empty
past), the shared-prefix suffixes and the answer tokens. A head tied to the input embeddings reads
the one table the embedding lookup reads (``_tied_weights_read_as_stored``): the weights are in
the graph once.

Exporters (``EXPORTERS``): ``torchscript`` traces the model (``torch.onnx.export(...,
dynamo=False)``), ``dynamo`` captures it with ``torch.export``. ``benchmarks/export_speed.py``
measures them side by side on the default model; ``DEFAULT_EXPORTER`` is the faster one that
passes the check (states at cosine >= 0.9999 to PyTorch on two probe batches of other shapes than
each other, logits likewise).
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._util import import_optional
from .ort import GRAPH_FILE, io_names, open_session, optimize_graph
from .pytorch import cache_argument, head_of, returned_cache
from .tokenizer import save_tokenizer

logger = logging.getLogger(__name__)

EXPORTERS = ("torchscript", "dynamo")
DEFAULT_EXPORTER = "torchscript"
MIN_COSINE = 0.9999  # exported graph against PyTorch on each probe batch
_OPSET = 17  # LayerNormalization as one op


def _tied_linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    out = torch.matmul(module.weight, x.transpose(-1, -2)).transpose(-1, -2)
    return out if module.bias is None else out + module.bias


@contextlib.contextmanager
def _tied_weights_read_as_stored(model: torch.nn.Module, head: torch.nn.Module) -> Iterator[None]:
    """While exporting, a head layer tied to the input embeddings computes ``(W @ x^T)^T``: exported,
    ``x @ W^T`` becomes a MatMul on a constant-folded transposed copy of the table (e.g. 113 MB more
    for SmolLM2), this one a MatMul on the one table the embedding lookup also reads."""
    table = model.get_input_embeddings().weight
    tied = [m for m in head.modules() if isinstance(m, torch.nn.Linear) and m.weight is table]
    for module in tied:
        module.forward = functools.partial(_tied_linear, module)  # type: ignore[method-assign]
    try:
        yield
    finally:
        for module in tied:
            del module.forward


def _picked(hidden: torch.Tensor, pick: torch.Tensor, head: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    states = hidden.gather(1, pick.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = head(states.reshape(-1, states.shape[-1]))
    return states, logits.reshape(states.shape[0], states.shape[1], -1)


class _CausalGraph(torch.nn.Module):
    """(ids, mask, positions, pick, k0, v0, k1, ...) -> (states, logits, k0', v0', ...)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = model.base_model
        self.head = head_of(model, "causal")
        self.config = model.config
        self._cache_argument = cache_argument(self.backbone)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                pick: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache(config=self.config)
        for layer in range(len(past) // 2):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            use_cache=True, **{self._cache_argument: cache})
        flat = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
        return (*_picked(out.last_hidden_state, pick, self.head), *flat)


class _MaskedGraph(torch.nn.Module):
    """(ids, mask, pick) -> (states, logits)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = model.base_model
        self.head = head_of(model, "masked")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pick: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return _picked(self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state, pick,
                       self.head)


def _probe(model: torch.nn.Module, kind: str, batch: int, new: int, past: int, picks: int,
           seed: int) -> tuple[torch.Tensor, ...]:
    """Graph inputs: ``batch`` rows of ``new`` tokens after ``past`` ones, the last row right-padded by 2."""
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, past + new), generator=generator)
    mask = torch.ones(batch, past + new, dtype=torch.long)
    mask[-1, -2:] = 0
    pick = torch.stack([torch.arange(picks) + (new - 2 - picks if row == batch - 1 else new - picks)
                        for row in range(batch)])  # real columns only
    if kind == "masked":
        return ids, mask, pick
    if past:
        with torch.inference_mode():
            cache = returned_cache(model.base_model(input_ids=ids[:, :past], attention_mask=mask[:, :past],
                                                    use_cache=True))
        cached = [t.clone() for layer in cache.layers for t in (layer.keys, layer.values)]
    else:
        cached = [torch.zeros(batch, heads, 0, head_dim) for heads, head_dim in _cache_shapes(model) for _ in (0, 1)]
    positions = torch.arange(past, past + new)[None, :].expand(batch, -1).contiguous()
    return (ids[:, past:], mask, positions, pick, *cached)


def _cache_shapes(model: torch.nn.Module) -> list[tuple[int, int]]:
    """(key/value heads, head size) of each layer of a causal model's cache, read from a one-token pass."""
    with torch.inference_mode():
        cache = returned_cache(model.base_model(input_ids=torch.zeros(1, 1, dtype=torch.long), use_cache=True))
    return [(int(layer.keys.shape[1]), int(layer.keys.shape[3])) for layer in cache.layers]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporter's progress lines, warnings and prints out of the user's log: they describe
    our graph, not their data."""
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


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(-1, a.shape[-1]).astype(np.float64), b.reshape(-1, b.shape[-1]).astype(np.float64)
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-300)
    return float(cos.min())


def _export(wrapper: torch.nn.Module, args: tuple[torch.Tensor, ...], names: tuple[list[str], list[str]],
            kind: str, folder: Path, exporter: str) -> None:
    inputs, outputs = names
    with torch.inference_mode(False), torch.no_grad(), _quiet():
        if exporter == "dynamo":
            import_optional("onnxscript", "onnx")  # the dynamo exporter's translator
            auto = torch.export.Dim.DYNAMIC
            dims: list[Any] = [{0: auto, 1: auto}] * (3 if kind == "masked" else 4)
            if kind == "causal":
                dims.append(tuple({0: auto, 2: auto} for _ in inputs[4:]))
            program = torch.onnx.export(wrapper, args, dynamic_shapes=tuple(dims), input_names=inputs,
                                        output_names=outputs, dynamo=True, verbose=False)
            program.save(str(folder / GRAPH_FILE), external_data=True)
            return
        axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "all"},
                                           "pick": {0: "batch", 1: "picks"}, "states": {0: "batch", 1: "picks"},
                                           "logits": {0: "batch", 1: "picks"}}
        if kind == "causal":
            axes["position_ids"] = {0: "batch", 1: "new"}
            axes.update({name: {0: "batch", 2: "past"} for name in inputs[4:]})
            axes.update({name: {0: "batch", 2: "all"} for name in outputs[2:]})
        traced = io.BytesIO()
        torch.onnx.export(wrapper, args, traced, input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=_OPSET, do_constant_folding=True, dynamo=False)
    onnx = import_optional("onnx", "onnx")
    graph = onnx.load_model_from_string(traced.getvalue())
    del traced
    # the weights in a file beside the graph, as the dynamo exporter writes them: ONNX Runtime reads them
    # straight into its tensors instead of parsing them out of the graph (measured on the default model:
    # a faster load, and no second copy at the load's peak)
    onnx.save_model(graph, str(folder / GRAPH_FILE), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{GRAPH_FILE}.data", size_threshold=1024)


def export_graph(model: torch.nn.Module, tokenizer: Any, kind: str, folder: Path, *,
                 exporter: str = DEFAULT_EXPORTER, label: str = "the model") -> dict[str, Any]:
    """Export ``model`` (float32, CPU) and its tokenizer into ``folder`` and check the graph; its record.

    A progress line (export and ONNX Runtime's optimisation, the check, the tokenizer) says what the
    wait is for: this happens once per model.
    """
    from tqdm.auto import tqdm

    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; use one of {list(EXPORTERS)}")
    ort = import_optional("onnxruntime", "onnx")
    model = model.eval()
    past_shapes = _cache_shapes(model) if kind == "causal" else []
    names = io_names(kind, len(past_shapes))
    wrapper = (_CausalGraph(model) if kind == "causal" else _MaskedGraph(model)).eval()
    with tqdm(total=3, desc=f"exporting {label} to ONNX (once)", unit="step", leave=True) as progress:
        with _tied_weights_read_as_stored(model, wrapper.head):
            _export(wrapper, _probe(model, kind, batch=2, new=5, past=3, picks=1 if kind == "causal" else 3, seed=0),
                    names, kind, folder, exporter)
        progress.update()
        optimized_by = optimize_graph(folder)
        session = open_session(folder, {"optimized_by": optimized_by}, ort.SessionOptions())  # what encoding runs
        cosine, dim = 1.0, 0
        for shape in ({"batch": 3, "new": 7, "past": 0, "picks": 2, "seed": 1},  # other shapes than the traced ones
                      {"batch": 1, "new": 3, "past": 4, "picks": 1, "seed": 2}):
            args = _probe(model, kind, **shape)
            with torch.inference_mode():
                expected = wrapper(*args)
            got = session.run(["states", "logits"], dict(zip(names[0], (a.numpy() for a in args))))
            cosine = min(cosine, _min_cosine(got[0], expected[0].numpy()), _min_cosine(got[1], expected[1].numpy()))
            dim = int(expected[0].shape[-1])
        if cosine < MIN_COSINE:
            raise RuntimeError(f"the ONNX export of this model does not match PyTorch (min cosine {cosine:.6f} on "
                               "the probe batches); use runtime='torch' for it")
        progress.update()
        spec = save_tokenizer(tokenizer, folder)
        progress.update()
    return {"kind": kind, "dim": dim, "inputs": names[0], "outputs": names[1],
            "past_shapes": [list(shape) for shape in past_shapes], "tokenizer": spec.as_record(),
            "exporter": exporter, "probe_min_cosine": cosine, "optimized_by": optimized_by,
            "torch": torch.__version__, "onnxruntime": ort.__version__}
