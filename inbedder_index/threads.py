"""How many CPU threads the model and FAISS use: one setting for both, chosen by the caller.

PyTorch and FAISS's OpenMP each default to every core. On a small machine that is also doing
other work, two thread pools spinning against each other (and against the load) can stall a
forward pass: ``python -m benchmarks.threads`` measures 1 and 2 threads side by side. On this
project's 2-core machine under load, one thread was 1.6x faster to encode and 3.8x faster to
search FAISS than two, so the CLI and the service use one thread on machines with at most two
cores unless told otherwise (``default_threads``). The library keeps the libraries' defaults
unless ``threads=`` is given.
"""

from __future__ import annotations

import os
import sys

SMALL_MACHINE_CORES = 2
_chosen: int | None = None  # what set_threads was given last (None: never called with a number)


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for the model (ONNX Runtime sessions opened later, PyTorch) and
    for FAISS searches and builds. torch is not imported for this: ``model_threads`` tells a
    PyTorch model loaded later."""
    global _chosen
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    _chosen = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    if "faiss" in sys.modules or _faiss_installed():
        import faiss

        faiss.omp_set_num_threads(threads)


def _faiss_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("faiss") is not None


def default_threads() -> int | None:
    """1 on a machine with at most two cores (see the module docstring), else the libraries' default."""
    return 1 if (os.cpu_count() or 1) <= SMALL_MACHINE_CORES else None


def model_threads() -> int | None:
    """The model's CPU threads: those given to ``set_threads``, else PyTorch's setting where it is
    loaded, else None (the runtime's own default)."""
    if _chosen is not None:
        return _chosen
    return sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
