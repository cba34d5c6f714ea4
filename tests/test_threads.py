"""One thread setting for the model and FAISS."""

from __future__ import annotations

import faiss
import pytest
import torch

from inbedder_index.threads import set_threads


def test_set_threads_sets_torch_and_faiss_and_none_keeps_them():
    before = torch.get_num_threads(), faiss.omp_get_max_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
        set_threads(None)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads"):
        set_threads(bad)
