"""Exceptions shared by the whole library.

Every error raised on purpose derives from :class:`InBedderError`, so callers can catch the
library's failures in one place, and also from the builtin that fits its meaning, so generic
handlers (``except ValueError``) keep working.  None derives from ``KeyError``: its ``str()``
wraps the message in quotes.
"""

from __future__ import annotations


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
