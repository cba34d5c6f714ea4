"""Combined search, answer facets and answer filters (``inbedder_index.search``) on real indexes.

Combined search is checked against NumPy over the stored vectors with a real tiny model's
query vectors; facets and answer filters against answers the test wrote through the build path
(``answered_index``), so the expected counts are known. The same features on every backend are
in ``test_backend_congruence.py``.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import answered_index as answered
from answered_index import FEEL, TOPIC, WANT
from inbedder_index import InBedder, InstructionIndex, search
from inbedder_index.errors import AnswersNotKeptError, UnknownInstructionError
from tiny_models import make_model

OPENINGS = ["I am furious", "I am so happy", "I feel calm", "This is sad", "Honestly I am annoyed"]
ASKS = ["I want a refund", "please help me", "send a new phone", "I need nothing", "fix my bill"]
SUBJECTS = ["the parcel never arrived", "the screen is broken", "the invoice is wrong", "rain delayed delivery"]
TEXTS = [f"{o}, {s}. {a}." for o in OPENINGS for a in ASKS for s in SUBJECTS[: 1 + (len(o) + len(a)) % 4]]
NORMAL = answered.NORMALISED


@pytest.fixture(scope="module")
def encoder() -> InBedder:
    model, tokenizer = make_model("llama")
    return InBedder.from_model(model, tokenizer, model_id="tiny-llama", max_length=96)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory, encoder: InBedder) -> InstructionIndex:
    """A FAISS index of crafted texts, encoded by the tiny model under three instructions."""
    index = InstructionIndex.open(tmp_path_factory.mktemp("encoded") / "idx", model=encoder)
    index.add([{"id": f"t{i:02d}", "text": text, "metadata": {"half": i % 2}} for i, text in enumerate(TEXTS)])
    index.add_instructions([FEEL, WANT, TOPIC])
    yield index
    index.close()


@pytest.fixture
def written(tmp_path: Path, encoder: InBedder) -> InstructionIndex:
    """An index with 60 documents whose vectors and answers the test chose."""
    n, dim = 60, encoder.dim
    index = InstructionIndex.open(tmp_path / "idx", model=encoder)
    answers = answered.answers_for(n)
    answered.write(index, answered.corpus(n),
                   {i: answered.unit_rows(n, dim, seed) for seed, i in enumerate(answers)}, answers)
    yield index
    index.close()


def test_answers_are_normalised_for_case_spacing_and_trailing_punctuation() -> None:
    for given, expected in NORMAL.items():
        assert search.normalise_answer(given) == expected
    assert search.normalise_answer("  Not   really ,  no !?. ") == "not really , no"
    assert search.normalise_answer("¿Qué?") == "¿qué"  # only trailing punctuation goes
    assert search.normalise_answer("STRASSE") == search.normalise_answer("straße")


# ----------------------------------------------------------------- combined search


def query_vectors(index: InstructionIndex, queries: dict[str, str]) -> dict[str, np.ndarray]:
    return {instruction: index.encoder.encode(text, instruction) for instruction, text in queries.items()}


@pytest.mark.parametrize("weights", [None, {FEEL: 2.0, WANT: 0.5}, {TOPIC: 0.0}])
@pytest.mark.parametrize("narrow", [False, True], ids=["default", "widened-from-one"])
def test_search_combined_equals_a_brute_force_ranking(encoded: InstructionIndex, weights: dict[str, float] | None,
                                                      narrow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if narrow:  # one candidate per collection at first: the result is right only if widening works
        monkeypatch.setattr(search, "MIN_CANDIDATES", 1)
        monkeypatch.setattr(search, "CANDIDATES_PER_HIT", 1)
    queries = {FEEL: "I am angry", WANT: "I want my money back", TOPIC: "a parcel that never came"}
    expected = answered.brute_force(encoded, query_vectors(encoded, queries), weights or {})
    for k in (1, 3, len(TEXTS)):
        hits = encoded.search_combined(queries, k=k, weights=weights)
        assert [h.id for h in hits] == [doc_id for doc_id, _ in expected[:k]]
        np.testing.assert_allclose([h.score for h in hits], [score for _, score in expected[:k]], atol=1e-5)


def test_combined_hits_carry_each_instructions_cosine_and_answer(encoded: InstructionIndex) -> None:
    queries = {FEEL: "I am angry", WANT: "I want my money back"}
    vectors = query_vectors(encoded, queries)
    hits = encoded.search_combined(queries, k=5, weights={WANT: 3.0})
    for hit in hits:
        assert list(hit.scores) == [FEEL, WANT] and list(hit.answers) == [FEEL, WANT]
        for instruction in (FEEL, WANT):
            stored = encoded.get_vectors([hit.id], instruction)[hit.id]
            assert hit.scores[instruction] == pytest.approx(float(stored @ vectors[instruction]), abs=1e-5)
            assert hit.answers[instruction] == encoded.answers(instruction, [hit.id])[hit.id]
        assert hit.score == pytest.approx(hit.scores[FEEL] + 3.0 * hit.scores[WANT], abs=1e-5)
        assert hit.answer == hit.answers[FEEL]
        assert hit.text == encoded.get([hit.id])[0].text


def test_combined_search_by_vectors_normalises_and_matches_text_queries(encoded: InstructionIndex) -> None:
    queries = {FEEL: "I am angry", WANT: "I am angry"}
    vectors = {i: 5.0 * v for i, v in query_vectors(encoded, queries).items()}  # any length: cosines all the same
    by_text = encoded.search_combined(queries, k=4)
    by_vector = encoded.search_combined_by_vectors(vectors, k=4)
    assert [h.id for h in by_vector] == [h.id for h in by_text]
    np.testing.assert_allclose([h.score for h in by_vector], [h.score for h in by_text], atol=1e-5)


def test_the_same_text_under_several_instructions_is_encoded_in_one_call(encoded: InstructionIndex) -> None:
    calls: list[Any] = []
    original = encoded.encoder.encode

    def counting(texts: Any, instruction: Any, **kwargs: Any) -> Any:
        calls.append((texts, instruction))
        return original(texts, instruction, **kwargs)

    encoded.encoder.encode = counting  # type: ignore[method-assign]
    try:
        encoded.search_combined({FEEL: "angry", WANT: "angry", TOPIC: "parcels"}, k=2)
    finally:
        del encoded.encoder.encode
    assert calls == [(["angry"], [FEEL, WANT]), (["parcels"], [TOPIC])]


def test_single_search_hits_carry_their_instruction(encoded: InstructionIndex) -> None:
    for hit in encoded.search("refund", WANT, k=3):
        assert hit.scores == {WANT: hit.score}
        assert hit.answers == {WANT: hit.answer} and hit.answer is not None


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda ix: ix.search_combined({}), ValueError, "non-empty mapping"),
    (lambda ix: ix.search_combined([FEEL]), ValueError, "non-empty mapping"),
    (lambda ix: ix.search_combined({FEEL: 3}), TypeError, "must be a string"),
    (lambda ix: ix.search_combined({"Who?": "x"}), UnknownInstructionError, "Who"),
    (lambda ix: ix.search_combined({FEEL: "x"}, weights={WANT: 1.0}), ValueError, "has no query"),
    (lambda ix: ix.search_combined({FEEL: "x"}, weights={FEEL: -1.0}), ValueError, ">= 0"),
    (lambda ix: ix.search_combined({FEEL: "x"}, weights={FEEL: float("nan")}), ValueError, "finite"),
    (lambda ix: ix.search_combined({FEEL: "x", WANT: "y"}, weights={FEEL: 0, WANT: 0}), ValueError, "every weight"),
    (lambda ix: ix.search_combined({FEEL: "x"}, k=0), ValueError, "k must be"),
    (lambda ix: ix.search_combined({FEEL: "x"}, filter={"$gt": 1}), ValueError, "only key starting with"),
    (lambda ix: ix.search_combined({FEEL: "x"}, filter={"$answer": ["angry"]}), ValueError, "map instructions"),
    (lambda ix: ix.search_combined({FEEL: "x"}, filter={"$answer": {}}), ValueError, "map instructions"),
    (lambda ix: ix.search("x", FEEL, filter={"$answer": {FEEL: []}}), ValueError, "non-empty list"),
    (lambda ix: ix.search("x", FEEL, filter={"$answer": {FEEL: [1]}}), ValueError, "strings"),
    (lambda ix: ix.search("x", FEEL, filter={"$answer": {"Who?": "x"}}), UnknownInstructionError, "Who"),
    (lambda ix: ix.facets(FEEL, k=0), ValueError, "k must be"),
    (lambda ix: ix.ids({"$answer": {FEEL: "x"}, "bad field!": 1}), ValueError, "not a valid name"),
])
def test_bad_requests_are_refused_before_the_model_runs(encoded: InstructionIndex, call: Any,
                                                        error: type[Exception], message: str) -> None:
    original = encoded.encoder.encode
    encoded.encoder.encode = lambda *a, **kw: pytest.fail("the model ran")  # type: ignore[method-assign]
    try:
        with pytest.raises(error, match=message):
            call(encoded)
    finally:
        encoded.encoder.encode = original  # type: ignore[method-assign]


def test_combined_query_vectors_are_checked(encoded: InstructionIndex) -> None:
    with pytest.raises(ValueError, match=re.escape(f"under {WANT!r}: query vector must have shape")):
        encoded.search_combined_by_vectors({FEEL: np.ones(encoded.encoder.dim), WANT: np.ones(3)})
    with pytest.raises(ValueError, match="all zeros"):
        encoded.search_combined_by_vectors({FEEL: np.zeros(encoded.encoder.dim)})


# ----------------------------------------------------------------- facets and answer filters


def expected_facets(index: InstructionIndex, instruction: str, allowed: set[str] | None = None) -> Counter[str]:
    given = answered.answers_for(len(index))[instruction]
    return Counter(NORMAL[given[i]] for i, doc_id in enumerate(index.ids()) if allowed is None or doc_id in allowed)


def test_facets_count_normalised_answers(written: InstructionIndex) -> None:
    counts = expected_facets(written, FEEL)
    assert set(counts) == {"angry", "furious", "happy", "calm", "sad"}  # the spellings merged
    facets = written.facets(FEEL)
    assert dict(facets) == counts
    assert facets == sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    assert written.facets(FEEL, k=2) == facets[:2]


def test_facets_count_only_documents_that_pass_the_filter(written: InstructionIndex) -> None:
    french = {d.id for d in written.get(written.ids()) if d.metadata["lang"] == "fr"}
    assert dict(written.facets(WANT, filter={"lang": "fr"})) == expected_facets(written, WANT, french)
    angry = {doc_id for doc_id, answer in zip(written.ids(), answered.answers_for(60)[FEEL])
             if NORMAL[answer] == "angry"}
    assert dict(written.facets(WANT, filter={"$answer": {FEEL: "ANGRY!"}})) == expected_facets(written, WANT, angry)
    both = angry & french
    assert dict(written.facets(WANT, filter={"$answer": {FEEL: ["angry"]}, "lang": "fr"})) == \
        expected_facets(written, WANT, both)
    assert written.facets(WANT, filter={"lang": "jp"}) == []


def test_answer_filters_select_by_the_stored_answer(written: InstructionIndex) -> None:
    given = answered.answers_for(60)
    ids = written.ids()
    wanted = {doc_id for i, doc_id in enumerate(ids)
              if NORMAL[given[FEEL][i]] in ("angry", "furious") and NORMAL[given[WANT][i]] == "a refund"}
    flt = {"$answer": {FEEL: ["Angry", "furious."], WANT: "A Refund"}}
    assert written.ids(flt) == [doc_id for doc_id in ids if doc_id in wanted]
    assert wanted  # the filter selects some documents, not all
    query = np.ones(written.encoder.dim, dtype=np.float32)
    assert {h.id for h in written.search_by_vector(query, TOPIC, k=60, filter=flt)} == wanted
    assert {h.id for h in written.search_combined_by_vectors({TOPIC: query, FEEL: query}, k=60, filter=flt)} == wanted
    assert written.ids({"$answer": {FEEL: "bored"}}) == []
    assert written.search_by_vector(query, TOPIC, filter={"$answer": {FEEL: "bored"}}) == []


def test_answers_of_a_changed_text_never_match_until_it_is_re_encoded(written: InstructionIndex) -> None:
    angry = written.ids({"$answer": {FEEL: "angry"}})
    changed = angry[:2]
    written.store_documents([{"id": doc_id, "text": f"A new text for {doc_id}."} for doc_id in changed])
    assert written.answers(FEEL, changed) == {}
    assert written.ids({"$answer": {FEEL: "angry"}}) == angry[2:]
    assert dict(written.facets(FEEL))["angry"] == len(angry) - 2
    query = np.ones(written.encoder.dim, dtype=np.float32)
    hits = written.search_by_vector(query, WANT, k=60, filter={"$answer": {FEEL: "angry"}})
    assert {h.id for h in hits} == set(angry[2:])
    answered.write(written, [{"id": d, "text": f"A new text for {d}."} for d in changed],  # re-encoded
                   {FEEL: answered.unit_rows(2, written.encoder.dim, 9)}, {FEEL: ["calm", "Calm."]})
    assert set(changed) <= set(written.ids({"$answer": {FEEL: "calm"}}))
    assert written.ids({"$answer": {FEEL: "angry"}}) == angry[2:]


def test_an_index_built_without_answers_says_so(tmp_path: Path, encoder: InBedder) -> None:
    with InstructionIndex.open(tmp_path / "idx", model=encoder) as index:
        index.add([{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS[:6])])
        index.add_instruction(FEEL, answers=False)
        for ask in (lambda: index.facets(FEEL), lambda: index.ids({"$answer": {FEEL: "angry"}}),
                    lambda: index.search("x", FEEL, filter={"$answer": {FEEL: "angry"}})):
            with pytest.raises(AnswersNotKeptError, match=r"answers=False.*rebuild it with answers"):
                ask()
        assert len(index.search("x", FEEL, k=3)) == 3  # the rest still works


def test_metadata_keys_starting_with_a_dollar_are_refused_with_nothing_stored(written: InstructionIndex) -> None:
    before = written.ids()
    with pytest.raises(ValueError, match=r"metadata key '\$answer' starts with '\$'"):
        written.add([{"id": "new", "text": "x", "metadata": {"$answer": "angry"}}])
    with pytest.raises(ValueError, match=r"'\$ne'"):
        written.store_documents([{"id": before[0], "text": "y", "metadata": {"$ne": 1}}])
    assert written.ids() == before
    assert written.get([before[0]])[0].text == "Document number 0."
    written.add([{"id": "nested", "text": "x", "metadata": {"deep": {"$ok": 1}}}])  # only top-level keys are filters
