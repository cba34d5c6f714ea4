"""The one small protocol every embedder meets, and ``connect``: the one place that picks one.

An index, the service and the integrations need five things from an embedder: which model it
runs (``model_id``), how long its vectors are (``dim``), an identity that changes whenever its
vectors would (``fingerprint``), how many prompt tokens it reads (``max_length``) and
``encode``. The local ``InBedder`` (on ONNX Runtime or PyTorch) and ``RemoteInBedder`` (a
server's model over HTTP) both meet it, so nothing above them asks which one it holds.

``connect(model, base_url=...)`` chooses: a server when ``base_url`` is given, else a local
model (ONNX Runtime on a CPU when it is installed, PyTorch on a GPU or when asked). Importing
this module imports nothing heavy.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

API_KEY_VARIABLE = "INBEDDER_INDEX_API_KEY"  # the server's own variable; clients read it too


class Embedder(Protocol):
    """Texts under an instruction -> vectors, the way ``SentenceTransformer.encode`` does it.

    ``encode`` returns a float32 array ``(len(texts), dim)`` in input order (1-D for a single
    string), or ``(vectors, answers)`` with ``return_answers=True``; a list of instructions
    gives a dict ``instruction -> result``. Equal fingerprints give equal vectors.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    @property
    def max_length(self) -> int: ...

    def encode(
        self,
        texts: str | Sequence[str],
        instruction: str | Sequence[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        show_progress_bar: bool | None = None,
        return_answers: bool = False,
    ) -> Any: ...


if sys.version_info >= (3, 12):  # isinstance() reads members statically there, so a remote card is never fetched
    from typing import runtime_checkable

    Embedder = runtime_checkable(Embedder)  # type: ignore[misc]


def check_texts(texts: Sequence[str]) -> list[str]:
    """``texts`` as a list, or a ``TypeError`` naming the first item that is not a string."""
    if isinstance(texts, (bytes, Mapping)) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a string or a sequence of strings, got {type(texts).__name__}")
    for position, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{position}] is {type(text).__name__}, not str")
    return list(texts)


def check_instructions(instruction: str | Sequence[str]) -> list[str]:
    """The distinct instructions, in order; an error that says what an instruction is for anything else."""
    if not isinstance(instruction, (str, Sequence)) or isinstance(instruction, bytes):
        raise TypeError(f"instruction must be a string or a list of strings, got {type(instruction).__name__}; "
                        "InBedder needs a question to answer, e.g. 'What is the topic of this text?'")
    items = [instruction] if isinstance(instruction, str) else list(instruction)
    if not items:
        raise ValueError("instruction list is empty; give at least one instruction")
    for position, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"instruction[{position}] is {type(item).__name__}, not str")
        if not item.strip():
            raise ValueError("instruction is empty or blank; InBedder needs a question to answer, "
                             "e.g. 'What is the topic of this text?'")
    return list(dict.fromkeys(items))


def connect(
    model: str | None = None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    **kwargs: Any,
) -> Embedder:
    """An embedder for ``model``: the model of the server at ``base_url``, or a local one.

    With ``base_url``: a ``RemoteInBedder`` (``model`` picks one of the server's models; the key
    is ``api_key``, else ``$INBEDDER_INDEX_API_KEY``); ``kwargs`` may only be the client's own
    settings (``batch_size``, ``timeout``). Without: ``InBedder(model or DEFAULT_MODEL,
    **kwargs)``, whose runtime is ONNX Runtime on a CPU unless ``runtime="torch"`` is given.
    """
    if base_url is None:
        if api_key is not None:
            raise ValueError("api_key is for a server: give base_url too (or drop api_key for a local model)")
        from .encoder import InBedder
        from .models import DEFAULT_MODEL

        return InBedder(model or DEFAULT_MODEL, **kwargs)
    from .client import RemoteInBedder

    accepted = set(inspect.signature(RemoteInBedder.__init__).parameters) - {"self", "base_url", "api_key", "model"}
    local = sorted(set(kwargs) - accepted)
    if local:
        raise ValueError(f"{', '.join(local)} configure a local model; with base_url the server's model is used "
                         f"(client settings: {', '.join(sorted(accepted))})")
    return RemoteInBedder(base_url, api_key=api_key or os.environ.get(API_KEY_VARIABLE) or None, model=model,
                          **kwargs)
