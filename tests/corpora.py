"""Instructions and crafted texts shared by the integration tests."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from typing import Any, TypeVar

from inbedder_index import InBedder
from tiny_models import make_model

FEEL = "How does the customer feel?"
WANT = "What does the customer want?"

# Feeling and want disagree: angry customers who want something other than money, and happy
# customers who want money back. A query that is angry AND wants a refund finds different top
# documents under the two instructions.
ANGRY = {
    "angry-manual": "I am furious, your courier was rude to me. Please send me the manual for my drill.",
    "angry-password": "I'm so angry I could scream. Please reset the password on my account.",
    "angry-jacket": "Furious. Just furious. Tell me whether the blue jacket comes in size medium.",
}
REFUND = {
    "happy-refund-charge": "Such a happy customer here, thank you! Could you give me my money back for the extra charge?",
    "happy-refund-item": "Thank you so much, I'm very pleased! I would like my money back for the cancelled item.",
    "happy-refund-giftcard": "Everything was lovely and I'm happy. Kindly refund the gift card I never used.",
}


# (id, text, metadata) of a small corpus; each integration wraps it in its own Document type.
SMALL_CORPUS = [
    ("a", "I am furious, the parcel never arrived and I want a refund.", {"shop": "north"}),
    ("b", "Thank you so much, the phone works perfectly now.", {"shop": "south"}),
    ("c", "Heavy rain is expected in Paris tomorrow.", {"shop": "north", "n": 3}),
    ("d", "Please change my delivery address.", {"shop": "east"}),
]


def feedback_documents() -> list[dict[str, Any]]:
    """SMALL_CORPUS, ANGRY and REFUND as documents: ten messages that differ in feeling and in want."""
    return [{"id": doc_id, "text": text, "metadata": metadata} for doc_id, text, metadata in SMALL_CORPUS] + [
        {"id": doc_id, "text": text} for doc_id, text in {**ANGRY, **REFUND}.items()]


_T = TypeVar("_T")


async def with_loop_ticks(awaitable: Awaitable[_T]) -> tuple[_T, int]:
    """Await while counting event-loop turns: more than one means the work ran off the loop."""
    ticks = 0

    async def ticker() -> Any:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        result = await awaitable
    finally:
        task.cancel()
    return result, ticks


@functools.cache
def tiny_encoder() -> InBedder:
    """A tiny random Llama: real InBedder code paths in milliseconds (no semantics)."""
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)
