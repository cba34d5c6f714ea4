"""The PyTorch runtime (GPUs, training, and anyone who asks) and what only PyTorch models need:
device and dtype choice, the pooling that training shares, the LM head, and the weights' digest."""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import numpy as np
import torch

from ..threads import model_threads
from . import Step


def pick_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[dtype]


def cache_argument(backbone: torch.nn.Module) -> str:
    """The forward keyword for cached keys/values: ``cache`` (transformers >= 5.2x), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


def head_of(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    """The module that turns the backbone's last states into vocabulary logits (what answers read)."""
    if kind == "causal":
        head = model.get_output_embeddings()
    else:  # a masked LM's head is more than its output embeddings (RoBERTa: dense, gelu, norm, decoder)
        head = getattr(model, "lm_head", None) or getattr(model, "cls", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no LM head this library can find (lm_head or cls); "
                         "answers need one")
    return head


def right_pad(sequences: list[list[int]] | Any, value: int, device: torch.device) -> torch.Tensor:
    """Sequences as one right-padded tensor: real tokens keep the positions of an unpadded pass."""
    width = max(len(s) for s in sequences)
    out = torch.full((len(sequences), width), value, dtype=torch.long)
    for row, seq in enumerate(sequences):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out.to(device)


def mask_slots(lengths: torch.Tensor, n_mask: int, n_tail: int) -> torch.Tensor:
    """(batch, n_mask) positions of the mask tokens, which sit before ``n_tail`` closing tokens."""
    first = lengths - n_tail - n_mask
    return first[:, None] + torch.arange(n_mask, device=lengths.device)[None, :]


def pool(hidden: torch.Tensor, lengths: torch.Tensor, n_mask: int, n_tail: int) -> torch.Tensor:
    """InBedder's pooling of a right-padded batch (float32): the mean at the mask slots (masked
    LMs, ``n_mask`` > 0) or the last prompt token (causal LMs). Training pools with this; the
    encoder picks the same columns (``encoder.pick_columns``) and averages them in NumPy."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    if n_mask:
        return hidden[rows[:, None], mask_slots(lengths, n_mask, n_tail)].float().mean(dim=1)
    return hidden[rows, lengths - 1].float()


def weights_digest(model: torch.nn.Module) -> str:
    """A digest of every value of every tensor of ``model``, read at bfloat16 precision.

    Rounding to bfloat16 makes a float32 and a bfloat16 load of the same files agree (an index
    built on a GPU in bfloat16 opens on a CPU in float32); any change a training step or an edit
    of a few embedding rows makes still changes it. A tensor shared by two names (tied
    embeddings) is hashed once. ~0.3 s for 135M parameters; cached per source (``sources``).
    """
    digest = hashlib.sha256()
    seen: dict[tuple[int, tuple[int, ...]], str] = {}
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            key = (tensor.data_ptr(), tuple(tensor.shape))
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}:{seen.get(key, '')}\n".encode())
            if key in seen and tensor.numel():
                continue
            seen[key] = name
            flat = tensor.detach().reshape(-1)
            if flat.is_floating_point():
                flat = flat.to(torch.bfloat16).view(torch.int16)
            digest.update(flat.cpu().numpy().tobytes())
    return digest.hexdigest()


def sampled_weights_stream(model: torch.nn.Module) -> bytes:
    """The weights as releases before the full digest fingerprinted them: 64 evenly spread values
    of every floating tensor, by name, at bfloat16 precision. Kept only so that indexes those
    releases built are recognised (``InBedder.earlier_fingerprints``)."""
    parts: list[bytes] = []
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            if flat.numel() == 0 or not flat.is_floating_point():
                continue
            count = min(flat.numel(), 64)
            picks = torch.arange(count, device=flat.device) * (flat.numel() - 1) // max(count - 1, 1)
            parts += [name.encode(), flat[picks].to(torch.bfloat16).float().cpu().numpy().tobytes()]
    return b"".join(parts)


class TorchRuntime:
    """Runs the loaded model on its device; its caches are transformers' own."""

    name = "torch"
    quantize = None
    vector_tag = None

    def __init__(self, model: torch.nn.Module, kind: str, device: torch.device) -> None:
        threads = model_threads()
        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.kind = kind
        self.device = device
        self.backbone = model.base_model
        self._cache_argument = cache_argument(self.backbone)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """The array as an int64 tensor on the device (copied only when it is not already a
        contiguous, writable int64 array: torch warns about read-only ones, e.g. a broadcast view)."""
        return torch.from_numpy(np.require(array, dtype=np.int64, requirements=("C", "W"))).to(self.device)

    @torch.inference_mode()
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
        kwargs: dict[str, Any] = {"input_ids": self._tensor(ids), "attention_mask": self._tensor(mask)}
        if positions is not None:  # masked LMs derive their own positions: pass only what is given
            kwargs["position_ids"] = self._tensor(positions)
        if past is not None:
            kwargs[self._cache_argument] = past
        kwargs["use_cache"] = keep or past is not None  # else causal models build a cache nobody reads
        out = self.backbone(**kwargs)
        hidden = out.last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        picked = hidden[rows, self._tensor(pick)]
        greedy = head_of(self.model, self.kind)(picked).argmax(-1).cpu().numpy() if tokens else None
        return Step(picked.float().cpu().numpy(), greedy, returned_cache(out) if keep else None)

    def crop(self, cache: Any, length: int) -> Any:
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)  # transformers 5 crops by a negative count of tokens to drop
        return cache
