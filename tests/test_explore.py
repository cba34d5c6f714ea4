"""The explorer's map (inbedder_index.explore) on a real FAISS index built with a tiny random model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpora import FEEL, WANT, feedback_documents, tiny_encoder

from inbedder_index import InstructionIndex
from inbedder_index.cluster import cluster_index
from inbedder_index.errors import UnknownInstructionError
from inbedder_index.explore import MAX_CLUSTERS, MAX_POINTS, TEXT_CHARS, collection_map

LONG = "My order came late and the box was crushed, " * 10
DOCS = [*feedback_documents(), {"id": "long", "text": LONG}]


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> InstructionIndex:
    built = InstructionIndex.open(tmp_path_factory.mktemp("explore") / "reviews", model=tiny_encoder())
    built.add(DOCS)
    built.add_instructions([FEEL, WANT])
    yield built
    built.close()


def pca_by_covariance(vectors: np.ndarray) -> np.ndarray:
    """The first two principal components by an eigendecomposition (another route than the SVD)."""
    centred = vectors.astype(np.float64) - vectors.mean(axis=0)
    values, vecs = np.linalg.eigh(centred.T @ centred)
    return centred @ vecs[:, np.argsort(values)[::-1][:2]]


def test_the_map_is_the_clusters_of_the_cluster_command_on_two_principal_components(index) -> None:
    mapped = collection_map(index, FEEL, clusters=3)
    report, _, _ = cluster_index(index, FEEL, 3)
    assert mapped.instruction == FEEL and not mapped.sampled and mapped.total == len(DOCS)
    assert [p.id for p in mapped.points] == index.ids()
    # the same documents fall together, and each cluster is named and counted as `cluster` reports it
    assert {frozenset(c.ids) for c in report.clusters} == {
        frozenset(p.id for p in mapped.points if p.cluster == c.cluster) for c in mapped.clusters}
    by_members = {frozenset(c.ids): c for c in report.clusters}
    for shown in mapped.clusters:
        members = frozenset(p.id for p in mapped.points if p.cluster == shown.cluster)
        expected = by_members[members]
        assert shown.size == len(members) == expected.size
        assert shown.top_answers == expected.top_answers
        assert shown.label == (expected.top_answers[0][0] if expected.top_answers else ", ".join(expected.top_words[:2]))
    # coordinates: the vectors' first two principal components (up to each axis' sign)
    vectors = index.get_vectors(index.ids(), FEEL)
    expected_xy = pca_by_covariance(np.stack([vectors[i] for i in index.ids()]))
    shown_xy = np.array([[p.x, p.y] for p in mapped.points])
    np.testing.assert_allclose(np.abs(shown_xy), np.abs(expected_xy), rtol=1e-3, atol=1e-4)
    # each point carries its stored answer and (the start of) its text
    answers = index.answers(FEEL, index.ids())
    texts = {d["id"]: d["text"] for d in DOCS}
    for point in mapped.points:
        assert point.answer == answers.get(point.id)
        assert point.text == texts[point.id][:TEXT_CHARS]
    assert len(next(p for p in mapped.points if p.id == "long").text) == TEXT_CHARS < len(LONG)


def test_a_collection_over_the_limit_is_mapped_through_a_fixed_sample(index) -> None:
    mapped = collection_map(index, WANT, limit=5, clusters=2)
    assert mapped.sampled and mapped.total == len(DOCS) and len(mapped.points) == 5
    ids = [p.id for p in mapped.points]
    assert len(set(ids)) == 5 and set(ids) <= set(index.ids())
    assert ids == [i for i in index.ids() if i in set(ids)]  # in index order
    assert sum(c.size for c in mapped.clusters) == 5 and len(mapped.clusters) == 2
    assert collection_map(index, WANT, limit=5, clusters=2) == mapped  # the same sample every time
    assert collection_map(index, WANT, limit=5, clusters=2, seed=1) != mapped


def test_fewer_documents_than_clusters_make_one_cluster_each(index) -> None:
    mapped = collection_map(index, FEEL, limit=3, clusters=MAX_CLUSTERS)
    assert sorted(p.cluster for p in mapped.points) == [0, 1, 2]
    one = collection_map(index, FEEL, limit=1, clusters=4)
    assert [(p.cluster, p.x, p.y) for p in one.points] == [(0, 0.0, 0.0)]
    assert [(c.cluster, c.size) for c in one.clusters] == [(0, 1)]


def test_an_empty_index_has_an_empty_map(tmp_path: Path) -> None:
    with InstructionIndex.open(tmp_path / "empty", model=tiny_encoder()) as empty:
        empty.add_instruction(FEEL)
        mapped = collection_map(empty, FEEL)
    assert (mapped.points, mapped.clusters, mapped.sampled, mapped.total) == ([], [], False, 0)


@pytest.mark.parametrize("arguments, phrase", [
    ({"limit": 0}, "limit must be an integer from 1"),
    ({"limit": MAX_POINTS + 1}, f"from 1 to {MAX_POINTS}"),
    ({"limit": True}, "limit must be an integer"),
    ({"clusters": 0}, "clusters must be an integer from 1"),
    ({"clusters": 2.5}, "clusters must be an integer"),
])
def test_bad_limits_are_refused_naming_the_bound(index, arguments, phrase) -> None:
    with pytest.raises(ValueError, match=phrase):
        collection_map(index, FEEL, **arguments)


def test_an_unknown_instruction_is_refused(index) -> None:
    with pytest.raises(UnknownInstructionError):
        collection_map(index, "Who wrote this?")


def test_the_map_serialises_as_the_http_contract_says(index) -> None:
    payload = collection_map(index, FEEL, limit=4, clusters=2).to_dict()
    assert set(payload) == {"instruction", "points", "clusters", "sampled", "total"}
    assert set(payload["points"][0]) == {"id", "x", "y", "cluster", "answer", "text"}
    assert set(payload["clusters"][0]) == {"cluster", "label", "size", "top_answers"}
