"""Caches that must never serve what they did not write: the embedding cache's rows (crafted with
SQLite directly) and the merged-adapter cache's entries and digest memo (rewritten in place,
``[]`` records, entries swapped for links or files). Whatever fails its check is computed again."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from inbedder_index import EmbeddingCache, InBedder
from inbedder_index.errors import EmbeddingCacheError
from tiny_models import count_forward_calls, make_model

FEEL = "How does the customer feel?"
TEXTS = ["I am furious, the parcel never arrived.", "Thanks, it works!", "Where is my parcel?"]


# ----------------------------------------------------------------- the embedding cache


@pytest.fixture
def cached_encoder(tmp_path) -> tuple[InBedder, EmbeddingCache, list[int]]:
    """A tiny Llama with an embedding cache, and the number of texts each forward pass saw."""
    model, tokenizer = make_model("llama")
    cache = EmbeddingCache(tmp_path / "cache")
    encoder = InBedder.from_model(model, tokenizer, max_length=96, embedding_cache=cache)
    return encoder, cache, count_forward_calls(encoder)


BAD_ROWS = {  # how a row is damaged -> the SQL value put in its place
    "4 bytes (was broadcast into a constant vector)": ("vector", b"\x00\x00\x80\x3f"),
    "one value short": ("vector", None),  # filled in by the test: the real row minus 4 bytes
    "text, not bytes": ("vector", "not a vector"),
    "a number, not bytes": ("vector", 42),
    "NaN values": ("vector", None),
    "an answer that is bytes, not text": ("answer", b"\xff\xfe"),  # TEXT affinity would turn a number into text
}


@pytest.mark.parametrize("damage", list(BAD_ROWS))
def test_a_bad_row_is_a_counted_miss_never_a_vector(cached_encoder, damage, caplog) -> None:
    encoder, cache, calls = cached_encoder
    expected = encoder.encode(TEXTS, FEEL)
    assert sum(calls) == len(TEXTS)
    column, value = BAD_ROWS[damage]
    with sqlite3.connect(cache.path) as db:
        [(digest, blob)] = db.execute("SELECT text_sha256, vector FROM embeddings ORDER BY text_sha256 LIMIT 1")
        if damage == "one value short":
            value = blob[:-4]
        elif damage == "NaN values":
            value = np.full(encoder.dim, np.nan, dtype=np.float32).tobytes()
        db.execute(f"UPDATE embeddings SET {column} = ? WHERE text_sha256 = ?", (value, digest))
    with caplog.at_level(logging.WARNING, logger="inbedder_index.cache"):
        again = encoder.encode(TEXTS, FEEL)
    np.testing.assert_allclose(again, expected, atol=1e-6)  # the damaged row was computed again
    assert sum(calls) == len(TEXTS) + 1 and cache.bad_rows == 1
    [warning] = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(cache.path) in warning and digest in warning  # names the file and the row
    encoder.encode(TEXTS, FEEL)  # the recomputed row overwrote the bad one
    assert sum(calls) == len(TEXTS) + 1 and cache.bad_rows == 1


def test_rows_of_another_dimension_are_misses(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    cache.put("model", FEEL, ["a", "b"], np.ones((2, 8), dtype=np.float32))
    assert cache.get("model", FEEL, ["a", "b"], dim=16) == {} and cache.bad_rows == 2
    hits = cache.get("model", FEEL, ["a", "b", "c"], dim=8)
    assert sorted(hits) == ["a", "b"] and hits["a"][0].dtype == np.float32 and hits["a"][0].shape == (8,)


def test_put_refuses_rows_that_do_not_pair_up(tmp_path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    with pytest.raises(ValueError, match="3 text hashes"):
        cache.put("model", FEEL, ["a", "b", "c"], np.ones((2, 8), dtype=np.float32))
    with pytest.raises(ValueError, match="answers"):
        cache.put("model", FEEL, ["a", "b"], np.ones((2, 8), dtype=np.float32), answers=["only one"])
    assert len(cache) == 0


def test_a_file_that_is_not_a_cache_names_itself(tmp_path) -> None:
    path = tmp_path / "embeddings.sqlite"
    path.write_bytes(b"this is not a database, but it is long enough to look like a header" * 20)
    with pytest.raises(EmbeddingCacheError, match=f"{path}.*delete it"):
        EmbeddingCache(path)
    with sqlite3.connect(tmp_path / "other.sqlite") as db:  # SQLite, but another program's table
        db.execute("CREATE TABLE embeddings (x INTEGER)")
    cache = EmbeddingCache(tmp_path / "other.sqlite")
    with pytest.raises(EmbeddingCacheError, match="other.sqlite"):
        cache.get("model", FEEL, ["a"], dim=8)
