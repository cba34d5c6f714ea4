"""``InBedderEmbedding``: a LlamaIndex embed model that embeds every text under one instruction."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr, field_validator

from inbedder_index import DEFAULT_MODEL, InBedder

_LOADING = threading.Lock()  # two threads' first calls must not load the model twice


class InBedderEmbedding(BaseEmbedding):
    """Texts embedded under ``instruction`` (a question about them), queries under ``query_instruction``.

    The model loads on first use, or pass a loaded one as ``encoder=``. ``with_instruction(...)``
    asks another question with the same loaded model, so a new aspect never costs a reload::

        feel = InBedderEmbedding(instruction="How does the customer feel?")
        want = feel.with_instruction("What does the customer want?")
        assert want.encoder is feel.encoder
    """

    model: str = Field(default=DEFAULT_MODEL, description="Built-in model name, Hugging Face id or local folder.")
    instruction: str = Field(description="The question every text is embedded under.")
    query_instruction: str | None = Field(default=None, description="The question for queries; None: instruction.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for InBedder(model).")
    _encoder: InBedder | None = PrivateAttr(default=None)

    def __init__(self, *, encoder: InBedder | None = None, **data: Any) -> None:
        if encoder is not None:  # ``model`` names the encoder, so serialised settings reload the same one
            if data.setdefault("model", encoder.model_id) != encoder.model_id:
                raise ValueError(f"model={data['model']!r} but the encoder given is {encoder.model_id!r}")
        data.setdefault("model_name", data.get("model", DEFAULT_MODEL))
        super().__init__(**data)
        self._encoder = encoder

    @field_validator("instruction", "query_instruction")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("instruction is blank; InBedder needs a question, e.g. 'How does the customer feel?'")
        return value

    @classmethod
    def class_name(cls) -> str:
        return "InBedderEmbedding"

    @property
    def encoder(self) -> InBedder:
        """The loaded model (loaded now if this is its first use)."""
        if self._encoder is None:
            with _LOADING:
                if self._encoder is None:
                    self._encoder = InBedder(self.model, **self.model_kwargs)
        return self._encoder

    def with_instruction(self, instruction: str, query_instruction: str | None = None) -> InBedderEmbedding:
        """The same embed model asking another question, sharing this one's loaded model."""
        fields = {name: getattr(self, name) for name in type(self).model_fields if name not in ("model", "model_name")}
        return type(self)(encoder=self.encoder, **{**fields, "instruction": instruction,
                                                   "query_instruction": query_instruction})

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self.encoder.encode(texts, self.instruction, batch_size=self.embed_batch_size).tolist()

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([text])[0]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self.encoder.encode(query, self.query_instruction or self.instruction).tolist()

    # The model runs on this machine: the async twins run it in a thread, not on the event loop.

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)
