"""``InBedderEmbedding``: a LlamaIndex embed model that embeds every text under one instruction."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from inbedder_index import DEFAULT_MODEL
from inbedder_index.client import remote_api_key
from inbedder_index.embedder import Embedder, connect

_LOADING = threading.Lock()  # two threads' first calls must not load the model twice


class InBedderEmbedding(BaseEmbedding):
    """Texts embedded under ``instruction`` (a question about them), queries under ``query_instruction``.

    The model loads on first use, or pass a loaded one as ``encoder=``. ``with_instruction(...)``
    asks another question with the same loaded model, so a new aspect never costs a reload::

        feel = InBedderEmbedding(instruction="How does the customer feel?")
        want = feel.with_instruction("What does the customer want?")
        assert want.encoder is feel.encoder

    With ``base_url`` (an ``inbedder-index serve`` server) nothing loads here: texts go to the
    server's ``/v1/embeddings`` with the instruction and come back as the same vectors;
    ``api_key`` defaults to ``$INBEDDER_INDEX_API_KEY``, and ``model`` is sent only when set.
    """

    model: str = Field(default=DEFAULT_MODEL, description="Built-in model name, Hugging Face id or local folder.")
    instruction: str = Field(description="The question every text is embedded under.")
    query_instruction: str | None = Field(default=None, description="The question for queries; None: instruction.")
    model_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for InBedder(model).")
    base_url: str | None = Field(default=None, description="An inbedder-index serve server to embed with.")
    api_key: SecretStr | None = Field(default=None, description="The server's API key ($INBEDDER_INDEX_API_KEY).")
    _encoder: Embedder | None = PrivateAttr(default=None)
    _model_given: bool = PrivateAttr(default=False)

    def __init__(self, *, encoder: Embedder | None = None, **data: Any) -> None:
        model_given = "model" in data
        if encoder is not None:  # ``model`` names the encoder, so serialised settings reload the same one
            if data.setdefault("model", encoder.model_id) != encoder.model_id:
                raise ValueError(f"model={data['model']!r} but the encoder given is {encoder.model_id!r}")
        data.setdefault("model_name", data.get("model", DEFAULT_MODEL))
        super().__init__(**data)
        self._encoder = encoder
        self._model_given = model_given

    @model_validator(mode="after")
    def _remote_settings(self) -> InBedderEmbedding:
        key = remote_api_key(self.base_url, self.api_key.get_secret_value() if self.api_key else None, self.model_kwargs)
        self.api_key = SecretStr(key) if key else None
        return self

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
    def encoder(self) -> Embedder:
        """The loaded model (loaded now if this is its first use): an ``InBedder``, or a ``RemoteInBedder``
        with ``base_url``."""
        if self._encoder is None:
            with _LOADING:
                if self._encoder is None:
                    remote = self.base_url is not None  # a server: its model unless one was named
                    self._encoder = connect(
                        self.model if not remote or self._model_given else None,
                        base_url=self.base_url, api_key=self.api_key.get_secret_value() if self.api_key else None,
                        **({"batch_size": self.embed_batch_size} if remote else self.model_kwargs))
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
