"""How many CPU threads the model and FAISS use: one setting for both, chosen by the caller.

PyTorch and FAISS's OpenMP each default to every core. On a small machine that is also doing
other work, two thread pools spinning against each other (and against the load) can stall a
forward pass: ``benchmarks/threads.py`` measures 1 and 2 threads side by side. ``None`` keeps
the libraries' defaults.
"""

from __future__ import annotations

import sys


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for the model (PyTorch) and for FAISS searches and builds."""
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    import torch

    torch.set_num_threads(threads)
    if "faiss" in sys.modules or _faiss_installed():
        import faiss

        faiss.omp_set_num_threads(threads)


def _faiss_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("faiss") is not None
