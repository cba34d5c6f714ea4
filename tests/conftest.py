from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import make_model  # noqa: E402


@pytest.fixture(scope="session")
def default_encoder():
    """The built-in default model, loaded once per test session (converted once per machine)."""
    from inbedder_index import InBedder

    return InBedder()


@pytest.fixture(scope="session", params=["roberta", "opt", "llama"])
def tiny(request):
    """(style, model, tokenizer) for each architecture family."""
    model, tokenizer = make_model(request.param)
    return request.param, model, tokenizer


@pytest.fixture
def tiny_encoder(tiny):
    from inbedder_index import InBedder

    style, model, tokenizer = tiny
    return InBedder.from_model(model, tokenizer, model_id=f"tiny-{style}", max_length=96, batch_size=3)
