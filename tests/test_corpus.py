"""The SQLite corpus: documents, filters, answers, per-collection state, meta, transactions."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from inbedder_index.backends.base import filter_matches
from inbedder_index.corpus import CORPUS_FILENAME, Corpus, Document
from inbedder_index.errors import CorpusError, InBedderError

DOCS = [
    Document("a", "alpha", {"lang": "en", "year": 2020, "tags": ["x", "y"], "draft": False}),
    Document("b", "beta", {"lang": "fr", "year": 2021.0, "draft": True}),
    Document("c", "gamma", {"lang": "en", "year": 2022, "tags": ["y"], "nested": {"lang": "fr"}}),
    Document("d", "delta"),
]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "index" / CORPUS_FILENAME


@pytest.fixture
def corpus(path: Path) -> Iterator[Corpus]:
    with Corpus(path) as opened:
        opened.upsert(DOCS)
        yield opened


def snapshot(corpus: Corpus) -> list[Document]:
    return corpus.get(corpus.ids())


# --------------------------------------------------------------------------- documents


def test_document_text_hash_is_the_sha256_of_the_text() -> None:
    assert Document("x", "héllo").text_hash == hashlib.sha256("héllo".encode()).hexdigest()
    assert Document("x", "t").metadata == {}


def test_documents_round_trip_and_persist(corpus: Corpus, path: Path) -> None:
    assert len(corpus) == 4
    assert corpus.ids() == ["a", "b", "c", "d"]
    assert corpus.get(["c", "zz", "a"]) == [DOCS[2], DOCS[0]]
    assert "b" in corpus and "zz" not in corpus and 3 not in corpus
    corpus.close()
    with Corpus(path) as reopened:
        assert snapshot(reopened) == DOCS


def test_upsert_returns_only_new_or_changed_texts(corpus: Corpus) -> None:
    assert corpus.upsert(DOCS) == []
    changed = [
        Document("b", "beta", {"lang": "de"}),  # metadata only: saved, not returned
        Document("c", "gamma, revised", DOCS[2].metadata),
        Document("e", "epsilon"),
    ]
    assert corpus.upsert(changed) == ["c", "e"]
    assert corpus.get(["b", "c"]) == changed[:2]
    assert corpus.ids() == ["a", "b", "c", "d", "e"]  # a replaced document keeps its place


def test_add_refuses_existing_ids_and_writes_nothing(corpus: Corpus) -> None:
    assert corpus.add([Document("e", "epsilon")]) == ["e"]
    with pytest.raises(CorpusError, match="already exist: 'a'") as raised:
        corpus.add([Document("f", "phi"), Document("a", "other")])
    assert isinstance(raised.value, (InBedderError, ValueError))
    assert "f" not in corpus
    assert corpus.get(["a"]) == [DOCS[0]]


@pytest.mark.parametrize("method", ["upsert", "add"])
@pytest.mark.parametrize(
    ("bad", "error", "message"),
    [
        (Document("n", "new"), ValueError, "duplicate ids in one call: 'n'"),  # duplicates position 0
        (Document(7, "text"), TypeError, "document 1: id must be a str"),  # type: ignore[arg-type]
        (Document("", "text"), ValueError, "document 1: id is empty"),
        (Document("x", b"bytes"), TypeError, r"document 1 \(id 'x'\): text must be a str"),  # type: ignore[arg-type]
        (Document("x", "t", ["not", "a", "dict"]), TypeError, "metadata must be a dict"),  # type: ignore[arg-type]
        (Document("x", "t", {1: "int key"}), TypeError, "metadata keys must be str"),
        (Document("x", "t", {"when": object()}), TypeError, r"document 1 \(id 'x'\): metadata is not JSON"),
        (Document("x", "t", {"score": float("nan")}), ValueError, "metadata is not JSON"),
        (Document("x", "\ud800"), ValueError, "not valid Unicode"),
        ("not a document", TypeError, "document 1: expected a Document"),
    ],
)
def test_bad_input_raises_naming_the_document_and_writes_nothing(
    corpus: Corpus, method: str, bad: Any, error: type[Exception], message: str
) -> None:
    before = snapshot(corpus)
    with pytest.raises(error, match=message):
        getattr(corpus, method)([Document("n", "new"), bad])
    assert snapshot(corpus) == before


def test_a_single_document_instead_of_a_list_is_refused(corpus: Corpus) -> None:
    with pytest.raises(TypeError, match="not a single Document"):
        corpus.upsert(Document("n", "new"))  # type: ignore[arg-type]


def test_delete_returns_the_ids_that_existed(corpus: Corpus) -> None:
    assert corpus.delete(["c", "zz", "a", "c"]) == ["c", "a"]
    assert corpus.ids() == ["b", "d"]
    assert corpus.delete(["c"]) == []
    with pytest.raises(TypeError, match="not a single string"):
        corpus.delete("b")


def test_reinserting_a_deleted_document_puts_it_last(corpus: Corpus) -> None:
    corpus.delete(["a"])
    corpus.upsert([DOCS[0]])
    assert corpus.ids() == ["b", "c", "d", "a"]


# --------------------------------------------------------------------------- streaming


def test_iter_batches_streams_in_insertion_order(corpus: Corpus) -> None:
    batches = list(corpus.iter_batches(3))
    assert [[d.id for d in batch] for batch in batches] == [["a", "b", "c"], ["d"]]
    assert batches[0][0] == DOCS[0]


def test_iter_batches_reads_one_page_at_a_time(corpus: Corpus) -> None:
    pages = corpus.iter_batches(2)
    assert [d.id for d in next(pages)] == ["a", "b"]
    corpus.upsert([Document("e", "epsilon")])  # written between pages: no read is held open
    corpus.delete(["c"])
    assert [[d.id for d in page] for page in pages] == [["d", "e"]]


def test_iter_batches_of_chosen_ids_follows_corpus_order(corpus: Corpus) -> None:
    batches = corpus.iter_batches(2, ids={"d", "a", "missing", "c"})
    assert [[d.id for d in batch] for batch in batches] == [["a", "c"], ["d"]]
    assert list(corpus.iter_batches(2, ids=[])) == []


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True])
def test_iter_batches_needs_a_positive_batch_size(corpus: Corpus, batch_size: Any) -> None:
    with pytest.raises(ValueError, match="batch_size"):
        corpus.iter_batches(batch_size)


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    "flt",
    [
        {},
        {"lang": "en"},
        {"lang": ["fr", "de"]},
        {"year": 2021},  # int matches the stored float 2021.0
        {"year": [2020.0, 2022]},
        {"draft": False},
        {"draft": 0},  # a number never matches a bool
        {"tags": "y"},  # list-valued metadata matches any element
        {"tags": "y", "lang": "en", "year": 2022},
        {"lang": "en", "draft": True},
        {"nested": "fr"},  # nested objects never match
        {"missing": "x"},
        {"year": "2020"},  # a string never matches a number
    ],
)
def test_ids_matching_agrees_with_filter_matches(corpus: Corpus, flt: dict[str, Any]) -> None:
    expected = {doc.id for doc in DOCS if filter_matches(flt, doc.metadata)}
    assert corpus.ids_matching(flt) == expected


def test_ids_matching_validates_the_filter(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="not a valid name"):
        corpus.ids_matching({"a.b": 1})


# --------------------------------------------------------------------------- answers and state


def test_answers_are_stored_per_collection(corpus: Corpus) -> None:
    corpus.set_answers("topic", {"a": "sports", "b": "food"})
    corpus.set_answers("tone", {"a": "happy"})
    corpus.set_answers("topic", {"a": "tennis"})
    assert corpus.get_answers("topic", ["a", "b", "c"]) == {"a": "tennis", "b": "food"}
    assert corpus.get_answers("tone", ["a", "b"]) == {"a": "happy"}
    corpus.drop_answers("topic")
    assert corpus.get_answers("topic", ["a", "b"]) == {}
    assert corpus.get_answers("tone", ["a"]) == {"a": "happy"}


def test_answers_for_unknown_documents_are_refused_whole(corpus: Corpus) -> None:
    with pytest.raises(CorpusError, match="not in the corpus: 'zz'"):
        corpus.set_answers("topic", {"a": "sports", "zz": "?"})
    assert corpus.get_answers("topic", ["a"]) == {}
    with pytest.raises(TypeError, match="answer for 'a' must be a str"):
        corpus.set_answers("topic", {"a": 3})  # type: ignore[dict-item]


def test_answers_go_with_their_document_and_its_text(corpus: Corpus) -> None:
    corpus.set_answers("topic", {"a": "sports", "b": "food", "c": "music"})
    corpus.delete(["a"])
    corpus.upsert([Document("b", "beta", {"new": "metadata"}), Document("c", "changed text")])
    assert corpus.get_answers("topic", ["a", "b", "c"]) == {"b": "food"}
    corpus.upsert([DOCS[0]])
    assert corpus.get_answers("topic", ["a"]) == {}


def test_stale_ids_track_which_vectors_match_the_current_text(corpus: Corpus) -> None:
    assert corpus.stale_ids("topic") == ["a", "b", "c", "d"]
    corpus.mark_embedded("topic", {d.id: d.text_hash for d in DOCS[:3]} | {"gone": "0" * 64})
    assert corpus.stale_ids("topic") == ["d"]
    assert corpus.stale_ids("tone") == ["a", "b", "c", "d"]

    corpus.upsert([Document("b", "beta", {"lang": "de"}), Document("c", "gamma 2"), Document("e", "eps")])
    assert corpus.stale_ids("topic") == ["c", "d", "e"]  # metadata-only change stays fresh
    assert corpus.stale_ids("topic", ids=["e", "a", "c", "unknown"]) == ["c", "e"]

    corpus.delete(["d"])
    corpus.upsert([Document("d", "delta")])  # deleted and re-added: its record went with it
    assert corpus.stale_ids("topic", ids=["d"]) == ["d"]

    corpus.set_answers("topic", {"a": "x"})
    corpus.forget_collection("topic")
    assert corpus.stale_ids("topic") == corpus.ids()
    assert corpus.get_answers("topic", ["a"]) == {}


# --------------------------------------------------------------------------- meta and transactions


def test_meta_is_a_string_key_value_store(corpus: Corpus, path: Path) -> None:
    assert corpus.get_meta("manifest") is None
    corpus.set_meta("manifest", '{"v": 1}')
    corpus.set_meta("manifest", '{"v": 2}')
    with pytest.raises(TypeError, match="meta value must be a str"):
        corpus.set_meta("manifest", {"v": 3})  # type: ignore[arg-type]
    corpus.close()
    with Corpus(path) as reopened:
        assert reopened.get_meta("manifest") == '{"v": 2}'


def test_a_failed_transaction_rolls_back_every_step(corpus: Corpus, path: Path) -> None:
    before = snapshot(corpus)
    with pytest.raises(RuntimeError, match="boom"):
        with corpus.transaction():
            corpus.upsert([Document("e", "epsilon")])
            corpus.delete(["a"])
            corpus.set_meta("manifest", "{}")
            corpus.set_answers("topic", {"b": "x"})
            raise RuntimeError("boom")
    assert snapshot(corpus) == before
    assert corpus.get_meta("manifest") is None
    assert corpus.get_answers("topic", ["b"]) == {}


def test_a_transaction_commits_atomically(corpus: Corpus, path: Path) -> None:
    with corpus.transaction():
        corpus.upsert([Document("e", "epsilon")])
        corpus.set_meta("manifest", '{"docs": 5}')
        # another connection sees nothing until the block ends
        with closing(sqlite3.connect(path)) as other:
            assert other.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 4
    with Corpus(path) as other_corpus:
        assert len(other_corpus) == 5
        assert other_corpus.get_meta("manifest") == '{"docs": 5}'


def test_a_failed_write_inside_a_transaction_undoes_only_itself(corpus: Corpus) -> None:
    with corpus.transaction():
        corpus.upsert([Document("e", "epsilon")])
        with pytest.raises(CorpusError):
            corpus.set_answers("topic", {"e": "ok", "zz": "unknown"})
        with pytest.raises(KeyError):
            with corpus.transaction():
                corpus.set_meta("k", "v")
                raise KeyError("inner")
    assert "e" in corpus
    assert corpus.get_answers("topic", ["e"]) == {}
    assert corpus.get_meta("k") is None


def test_the_database_uses_wal_and_a_busy_timeout(corpus: Corpus, path: Path) -> None:
    with closing(sqlite3.connect(path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert corpus._conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_a_newer_schema_is_refused(path: Path) -> None:
    Corpus(path).close()
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CorpusError, match="schema version 99"):
        Corpus(path)
