"""Exceptions shared by the whole library.

Every error raised on purpose derives from :class:`InBedderError`, so callers can catch the
library's failures in one place, and also from the builtin that fits its meaning, so generic
handlers (``except ValueError``) keep working.  None derives from ``KeyError``: its ``str()``
wraps the message in quotes.
"""

from __future__ import annotations

from collections.abc import Mapping


class InBedderError(Exception):
    """Base class of every error the library raises on purpose."""


class IndexLockedError(InBedderError, RuntimeError):
    """The index (or its Qdrant storage folder) is in use by another process or client."""


class ModelMismatchError(InBedderError, ValueError):
    """The index was built with a different model than the one it is opened with."""


class UnknownInstructionError(InBedderError, ValueError):
    """No collection exists for the requested instruction."""


class BackendUnavailableError(InBedderError, RuntimeError):
    """A vector database cannot be reached."""


class CorpusError(InBedderError, ValueError):
    """A corpus operation conflicts with the stored documents (e.g. adding an existing id)."""


class CollectionNotFoundError(InBedderError, ValueError):
    """A vector collection opened without ``create=True`` does not exist."""


class CollectionCorruptError(InBedderError, ValueError):
    """A stored vector collection cannot be read back."""


class ModelNotAvailableError(InBedderError, OSError):
    """A model could not be found or loaded (unknown name, offline hub, missing package)."""


class IndexClosedError(InBedderError, RuntimeError):
    """A method was called on an index after ``close()``."""


class IncompleteIndexError(InBedderError, RuntimeError):
    """A collection holds no vectors although the corpus has documents."""


class ManifestError(InBedderError, ValueError):
    """The manifest of an index is malformed, or disagrees with how the index is opened."""


class UnsafePathError(InBedderError, ValueError):
    """A path inside an index folder is a link or leads outside the folder."""


class MissingCollectionError(InBedderError, LookupError):
    """The manifest lists a collection that its backend does not hold."""


class LimitExceededError(InBedderError, ValueError):
    """An input exceeds one of the library's bounds (``inbedder_index.limits``) or a server's."""


class EmbeddingCacheError(InBedderError, OSError):
    """An embedding cache file cannot be read as one (not SQLite, or damaged)."""


class RemoteEmbedderError(InBedderError, RuntimeError):
    """An ``inbedder-index serve`` server cannot be used: it failed, was too slow, or answered with
    something that is not what was asked for."""


class AnswersNotKeptError(InBedderError, ValueError):
    """Answers were asked of a collection built with ``answers=False`` (facets, answer filters)."""


class CollectionOwnershipError(InBedderError, ValueError):
    """A Qdrant collection holds points of another index: it is neither written nor dropped."""


class StreamError(InBedderError, ValueError):
    """A FAISS stream is not what this library writes, or claims more than the file holds."""


class InputFileError(InBedderError, ValueError):
    """An input file cannot be read as documents; the message names the file and line."""


class TrainingDataError(InBedderError, ValueError):
    """A training data file is missing or malformed; the message names the file and line."""


class EvaluationDataError(InBedderError, ValueError):
    """An evaluation source is unknown or malformed; the message names the file and line."""


class DatasetNotAvailableError(InBedderError, OSError):
    """A Hugging Face evaluation dataset could not be fetched (offline, no network, not cached)."""


class QueueFullError(InBedderError, RuntimeError):
    """The server's queue holds as many texts as it may; try again after ``retry_after`` seconds."""

    def __init__(self, waiting: int, limit: int, retry_after: float) -> None:
        super().__init__(f"the server is busy: {waiting} texts are waiting (limit {limit}); retry shortly")
        self.retry_after = retry_after


class ShuttingDownError(InBedderError, RuntimeError):
    """The server's worker stopped before it reached this request."""


class ApiError(InBedderError):
    """An HTTP refusal with its status, OpenAI error ``code`` and extra headers."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.param, self.headers = status, code, param, dict(headers or {})
