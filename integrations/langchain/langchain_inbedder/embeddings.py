"""``InBedderEmbeddings``: LangChain ``Embeddings`` that embed every text under one instruction."""

from __future__ import annotations

import threading
from typing import Any

from langchain_core.embeddings import Embeddings
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from inbedder_index import DEFAULT_MODEL
from inbedder_index.client import remote_api_key
from inbedder_index.embedder import Embedder, connect

_LOADING = threading.Lock()  # two threads' first calls must not load the model twice


class InBedderEmbeddings(BaseModel, Embeddings):
    """Texts embedded under ``instruction`` (a question about them), queries under ``query_instruction``.

    The model loads on first use, or pass a loaded one as ``encoder``. Another aspect of the same
    corpus is one ``with_instruction(...)`` away and reuses that loaded model, so a new question
    never costs a reload::

        feel = InBedderEmbeddings(instruction="How does the customer feel?")
        want = feel.with_instruction("What does the customer want?")
        assert want.encoder is feel.encoder

    With ``base_url`` (an ``inbedder-index serve`` server) nothing loads here: texts go to the
    server's ``/v1/embeddings`` with the instruction and come back as the same vectors;
    ``api_key`` defaults to ``$INBEDDER_INDEX_API_KEY``, and ``model`` is sent only when set.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", protected_namespaces=())

    model: str = DEFAULT_MODEL
    """A built-in model name, a Hugging Face id or a local folder (see ``InBedder``)."""
    instruction: str
    """The question every document is embedded under."""
    query_instruction: str | None = None
    """The question queries are embedded under; ``None``: ``instruction`` (InBedder is symmetric)."""
    batch_size: int = Field(default=32, ge=1)
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for ``InBedder(model, ...)`` (device, dtype, max_length, cache_dir, ...)."""
    base_url: str | None = None
    """An ``inbedder-index serve`` server to embed with, e.g. ``http://127.0.0.1:8000``."""
    api_key: SecretStr | None = None
    """The server's API key (default: ``$INBEDDER_INDEX_API_KEY``); only with ``base_url``."""
    encoder: Any = Field(default=None, exclude=True, repr=False)
    """The ``Embedder`` (an ``InBedder``, a ``RemoteInBedder`` with ``base_url``); set on first use, or given to
    share one."""

    @field_validator("instruction", "query_instruction")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("instruction is blank; InBedder needs a question, e.g. 'How does the customer feel?'")
        return value

    @model_validator(mode="after")
    def _remote_settings(self) -> InBedderEmbeddings:
        key = remote_api_key(self.base_url, self.api_key.get_secret_value() if self.api_key else None, self.model_kwargs)
        self.api_key = SecretStr(key) if key else None
        return self

    @model_validator(mode="after")
    def _model_names_encoder(self) -> InBedderEmbeddings:
        """``model`` says which model ``encoder`` is, so a serialised embedder reloads the right one."""
        if self.encoder is not None:
            if "model" in self.model_fields_set and self.model != self.encoder.model_id:
                raise ValueError(f"model={self.model!r} but the encoder given is {self.encoder.model_id!r}")
            self.model = self.encoder.model_id
        return self

    def load(self) -> Embedder:
        """The model, loaded now if this is its first use (``encoder`` is set afterwards)."""
        if self.encoder is None:
            with _LOADING:
                if self.encoder is None:
                    remote = self.base_url is not None  # a server: its model unless one was named
                    self.encoder = connect(
                        self.model if not remote or "model" in self.model_fields_set else None,
                        base_url=self.base_url, api_key=self.api_key.get_secret_value() if self.api_key else None,
                        **({"batch_size": self.batch_size} if remote else self.model_kwargs))
        return self.encoder

    def with_instruction(self, instruction: str, query_instruction: str | None = None) -> InBedderEmbeddings:
        """The same embedder asking another question, sharing this one's model (loaded now if it was not)."""
        fields = {name: getattr(self, name) for name in type(self).model_fields if name != "model"}  # from encoder
        return type(self)(**{**fields, "instruction": instruction, "query_instruction": query_instruction,
                             "encoder": self.load()})

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.load().encode(texts, self.instruction, batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.load().encode(text, self.query_instruction or self.instruction).tolist()

    # aembed_documents / aembed_query: Embeddings' defaults already run these in a thread executor.
