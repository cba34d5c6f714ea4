"""Indexes whose vectors and answers the test chooses, written through the library's build path.

The vectors and answers go through ``register_instructions`` and ``Sync.store`` /
``Sync.checkpoint``, the path a build that encodes elsewhere takes (``inbedder_index.distributed``),
into real collections and a real corpus, so tests of answer filters, facets and combined search
know exactly what is stored (answers a tiny random model would give are gibberish).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inbedder_index import InstructionIndex

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"
TOPIC = "What is the topic?"

FEELINGS = ["Angry.", "angry", " ANGRY ", "Furious!", "happy", "Happy.", "calm", "sad?"]
WANTS = ["A refund.", "a refund", "Help", "help!", "nothing", "A new phone"]
TOPICS = ["delivery", "billing", "phone"]
NORMALISED = {"Angry.": "angry", "angry": "angry", " ANGRY ": "angry", "Furious!": "furious", "happy": "happy",
              "Happy.": "happy", "calm": "calm", "sad?": "sad", "A refund.": "a refund", "a refund": "a refund",
              "Help": "help", "help!": "help", "nothing": "nothing", "A new phone": "a new phone",
              "delivery": "delivery", "billing": "billing", "phone": "phone"}
"""Each answer above as answers are compared and counted: no case, extra spaces or trailing punctuation."""


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def corpus(n: int) -> list[dict[str, Any]]:
    """``n`` documents with metadata a filter can select."""
    return [{"id": f"doc-{i:03d}", "text": f"Document number {i}.",
             "metadata": {"lang": ("en", "fr", "de")[i % 3], "n": i % 5}} for i in range(n)]


def answers_for(n: int) -> dict[str, list[str]]:
    """Per instruction, the answer of each document (spellings that normalise together)."""
    return {FEEL: [FEELINGS[(i * 7) % len(FEELINGS)] for i in range(n)],
            WANT: [WANTS[(i * 5) % len(WANTS)] for i in range(n)],
            TOPIC: [TOPICS[i % len(TOPICS)] for i in range(n)]}


def write(index: InstructionIndex, docs: Sequence[Mapping[str, Any]], vectors: Mapping[str, np.ndarray],
          answers: Mapping[str, Sequence[str] | None]) -> None:
    """Store ``docs`` with the given vectors (and answers, None: none) per instruction."""
    index.store_documents(docs)
    for instruction, given in answers.items():
        index.register_instructions([instruction], answers=given is not None)
    sync = index.sync_state()
    stored = index.get([d["id"] for d in docs])
    pending: dict[str, dict[str, str]] = {instruction: {} for instruction in vectors}
    for instruction, matrix in vectors.items():
        sync.store(instruction, stored, matrix, answers[instruction], pending)
    sync.checkpoint(pending)


def brute_force(index: InstructionIndex, queries: Mapping[str, np.ndarray], weights: Mapping[str, float],
                allowed: set[str] | None = None) -> list[tuple[str, float]]:
    """Every document with a vector under each instruction, ranked by NumPy over its stored vectors."""
    ids = [doc_id for doc_id in index.ids() if allowed is None or doc_id in allowed]
    if not ids:
        return []
    total = np.zeros(len(ids))
    for instruction, query in queries.items():
        stored = index.get_vectors(ids, instruction)
        assert stored.keys() == set(ids)
        unit = np.asarray(query, dtype=np.float64) / np.linalg.norm(query)
        total += weights.get(instruction, 1.0) * (np.stack([stored[d] for d in ids]).astype(np.float64) @ unit)
    order = np.argsort(-total, kind="stable")
    return [(ids[i], float(total[i])) for i in order]
