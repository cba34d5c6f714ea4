"""Forward-pass runtimes: token ids and attention mask (and cached keys/values) -> last hidden state.

The encoder owns everything around the forward pass (prompts, batching, padding, pooling, the
answers, the fingerprint); a runtime only runs the model's backbone, so every runtime gives the
same vectors from the same code:

- ``torch`` (``pytorch.TorchRuntime``): the loaded PyTorch model, eager, SDPA attention;
- ``onnx`` (``ort.OnnxRuntime``): the backbone exported once per model into the model cache and
  run by ONNX Runtime on the CPU (the ``onnx`` extra); ``quantize="int8"`` runs dynamically
  quantised int8 weights instead, which changes the vectors (and so the fingerprint); an
  ``ort.Int8Settings`` instead of "int8" picks which weights (for experiments).

Caches of keys/values are opaque to the encoder: it only hands back what ``forward`` returned,
and ``crop`` cuts one back to its first tokens so that several suffixes can share a prefix.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import torch

from ..models import Kind

RUNTIMES = ("torch", "onnx")
QUANTIZE = ("int8",)


class Runtime(Protocol):
    """What the encoder needs from a way of running the model."""

    name: str
    quantize: str | None

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        past: Any = None,
        keep: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        """The last layer's states ``(batch, len(ids[0]), dim)`` of right-padded ``ids`` after ``past``.

        ``mask`` covers the past and the new tokens; ``positions`` defaults to the new tokens'
        places after the past. With ``keep``, also a cache of the past and these tokens that a
        later call can continue (causal models only); else ``None``.
        """
        ...

    def crop(self, cache: Any, length: int) -> Any:
        """``cache`` cut back to its first ``length`` tokens (it may be changed in place)."""
        ...

    @property
    def vector_tag(self) -> str | None:
        """None when the vectors equal the PyTorch model's; else what makes them differ (in the fingerprint)."""
        ...


def check_options(runtime: str, quantize: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Fail early, naming the value, on a runtime/quantisation choice that cannot run here."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {list(RUNTIMES)}")
    from .ort import Int8Settings

    if quantize is not None and quantize not in QUANTIZE and not isinstance(quantize, Int8Settings):
        raise ValueError(f"unknown quantize {quantize!r}; use None or one of {list(QUANTIZE)}")
    if quantize is not None and runtime != "onnx":
        raise ValueError(f"quantize={quantize!r} needs runtime='onnx' (dynamic int8 weights run in ONNX Runtime)")
    if runtime == "onnx" and device.type != "cpu":
        raise ValueError(f"runtime='onnx' runs on the CPU, not {device}; use runtime='torch' on a GPU")
    if runtime == "onnx" and dtype != torch.float32:
        raise ValueError(f"runtime='onnx' exports the model in float32, not {dtype}; pass dtype='float32'")


def load_runtime(
    runtime: str,
    model: torch.nn.Module,
    kind: Kind,
    *,
    quantize: Any,
    fingerprint: str,
    cache_dir: str | os.PathLike[str] | None,
    threads: int | None = None,
) -> Runtime:
    """The named runtime over ``model``'s backbone (``fingerprint`` keys the exported graph)."""
    if runtime == "torch":
        from .pytorch import TorchRuntime

        return TorchRuntime(model.base_model)
    from .ort import OnnxRuntime

    return OnnxRuntime(model, kind, fingerprint=fingerprint, quantize=quantize, cache_dir=cache_dir,
                       threads=threads)
