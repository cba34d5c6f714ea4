"""The PyTorch runtime: the loaded model's backbone, eager (the default, and the only one on a GPU)."""

from __future__ import annotations

import inspect
from typing import Any

import torch


def cache_argument(backbone: torch.nn.Module) -> str:
    """The forward keyword for cached keys/values: ``cache`` (transformers >= 5.2x), else ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else getattr(out, "past_key_values", None)


class TorchRuntime:
    """Runs ``backbone`` (``model.base_model``) as loaded; its caches are transformers' own."""

    name = "torch"
    quantize = None
    vector_tag = None

    def __init__(self, backbone: torch.nn.Module) -> None:
        self.backbone = backbone
        self._cache_argument = cache_argument(backbone)

    def forward(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        positions: torch.Tensor | None = None,
        past: Any = None,
        keep: bool = False,
    ) -> tuple[torch.Tensor, Any]:
        kwargs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if positions is not None:  # masked LMs derive their own positions: pass only what is given
            kwargs["position_ids"] = positions
        if past is not None:
            kwargs[self._cache_argument] = past
        kwargs["use_cache"] = keep or past is not None  # else causal models build a cache nobody reads
        out = self.backbone(**kwargs)
        return out.last_hidden_state, returned_cache(out) if keep else None

    def crop(self, cache: Any, length: int) -> Any:
        extra = cache.get_seq_length() - length
        if extra > 0:
            cache.crop(-extra)  # transformers 5 crops by a negative count of tokens to drop
        return cache
