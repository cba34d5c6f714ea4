"""Forward-pass runtimes: token ids and attention mask (and cached keys/values) -> states and greedy tokens.

The encoder owns everything around the forward pass (prompts, batching, padding, pooling, the
answers' decoding loop, the fingerprint); a runtime runs the model on NumPy arrays and returns
NumPy arrays, so every runtime gives the same vectors from the same code:

- ``onnx`` (``ort.OnnxRuntime``), the default on a CPU: the model exported once per fingerprint
  into the model cache (``export``) and run by ONNX Runtime; once exported, neither torch nor
  transformers is imported. ``quantize="int8"`` runs dynamically quantised int8 weights, which
  changes the vectors (and so the fingerprint); an ``ort.Int8Settings`` instead of "int8" picks
  which weights (for experiments).
- ``torch`` (``pytorch.TorchRuntime``): the loaded PyTorch model, eager; the runtime of GPUs, of
  training and of anyone who asks.

A runtime returns the last layer's states only at the columns the encoder picks (the pooled
positions) and, when asked, the LM head's greedy token there: the full ``(batch, length, dim)``
states and vocabulary-wide logits never leave it. Caches of keys/values are opaque to the encoder:
it only hands back what ``forward`` returned, and ``crop`` cuts one back to its first tokens so
that several suffixes can share a prefix.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

RUNTIMES = ("torch", "onnx")
QUANTIZE = ("int8",)
_FLOAT32 = {"float32", "fp32"}


@dataclass
class Step:
    """What one forward pass returns."""

    states: np.ndarray  # (batch, picks, dim) float32: the last layer's states at the picked columns
    tokens: np.ndarray | None  # (batch, picks) int64: the LM head's greedy token there, when asked
    cache: Any  # the keys/values of the past and these tokens (causal models, keep=True), else None


class Runtime(Protocol):
    """What the encoder needs from a way of running the model."""

    name: str
    quantize: str | None

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
        """Right-padded ``ids`` (batch, new) after ``past``; ``pick`` (batch, picks) are columns of ``ids``.

        ``mask`` covers the past and the new tokens; ``positions`` defaults to the new tokens'
        places after the past. With ``keep``, the step's cache continues in a later call
        (causal models only); with ``tokens``, the LM head's argmax at the picked columns.
        """
        ...

    def crop(self, cache: Any, length: int) -> Any:
        """``cache`` cut back to its first ``length`` tokens (it may be changed in place)."""
        ...

    @property
    def vector_tag(self) -> str | None:
        """None when the vectors equal the PyTorch model's; else what makes them differ (in the fingerprint)."""
        ...


def device_type(device: Any) -> str:
    """``"cpu"``, ``"cuda"``, ``"mps"`` ... of a device given as a string or a ``torch.device``."""
    return str(device).split(":")[0]


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _gpu_present() -> bool:
    """A GPU that PyTorch can use; torch is imported only where a GPU driver is installed."""
    if "torch" not in sys.modules and not any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/kfd")):
        return False
    import torch

    return bool(torch.cuda.is_available())


def onnx_installed() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def choose_runtime(runtime: str | None, quantize: Any, device: Any, dtype: Any) -> str:
    """The runtime to use, failing early (naming the value) on a choice that cannot run here.

    ``None`` picks ONNX Runtime on a CPU in float32 where it is installed, else PyTorch (a GPU,
    another dtype, or no onnxruntime).
    """
    if runtime is not None and runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; use one of {list(RUNTIMES)} (or None: ONNX Runtime on a CPU)")
    from .ort import Int8Settings

    if quantize is not None and quantize not in QUANTIZE and not isinstance(quantize, Int8Settings):
        raise ValueError(f"unknown quantize {quantize!r}; use None or one of {list(QUANTIZE)}")
    if runtime is None:
        cpu = device_type(device) == "cpu" if device is not None else not _gpu_present()
        runtime = "onnx" if quantize is not None or (cpu and (dtype is None or _dtype_name(dtype) in _FLOAT32)
                                                      and onnx_installed()) else "torch"
    if quantize is not None and runtime != "onnx":
        raise ValueError(f"quantize={quantize!r} needs runtime='onnx' (dynamic int8 weights run in ONNX Runtime)")
    if runtime == "onnx":
        if device is not None and device_type(device) != "cpu":
            raise ValueError(f"runtime='onnx' runs on the CPU, not {device}; use runtime='torch' on a GPU")
        if dtype is not None and _dtype_name(dtype) not in _FLOAT32:
            raise ValueError(f"runtime='onnx' exports the model in float32, not {dtype}; pass dtype='float32'")
        if not onnx_installed():
            raise ImportError("runtime='onnx' needs onnxruntime: pip install onnxruntime (or runtime='torch')")
    return runtime
