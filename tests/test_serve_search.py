"""Combined search, facets and answer filters over HTTP: a real server on 127.0.0.1 (free port),
a tiny model, real FAISS indexes; every answer is compared with the library's on the same index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from corpora import FEEL, SMALL_CORPUS, WANT, tiny_encoder
from serving import running, tiny_server_encoder

from inbedder_index import InstructionIndex
from inbedder_index.search import normalise_answer
from inbedder_index.serve import Service, Settings

DOCS = [{"id": doc_id, "text": text, "metadata": metadata} for doc_id, text, metadata in SMALL_CORPUS]


def build(path: Path, *, answers: bool = True) -> Path:
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        index.add(DOCS)
        index.add_instructions([FEEL, WANT], answers=answers)
    return path


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("serve-search")
    return {"reviews": build(folder / "reviews"), "plain": build(folder / "plain", answers=False)}


@pytest.fixture(scope="module")
def server(paths) -> Iterator[tuple[str, Service]]:
    encoder = tiny_server_encoder()
    indexes = {name: InstructionIndex.open(path, model=encoder, read_only=True) for name, path in paths.items()}
    with running(encoder, indexes, Settings(read_only=True)) as served:
        yield served


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as http:
        yield http


def library(paths: dict[str, Path]) -> InstructionIndex:
    return InstructionIndex.open(paths["reviews"], model=tiny_encoder(), read_only=True)


def assert_same_hits(got: list[dict], expected: list) -> None:
    assert [hit["id"] for hit in got] == [hit.id for hit in expected] and expected
    for hit, want in zip(got, expected):
        assert set(hit) == {"id", "score", "text", "metadata", "answer", "scores", "answers"}
        assert (hit["text"], hit["metadata"], hit["answer"], hit["answers"]) == \
            (want.text, want.metadata, want.answer, want.answers)
        assert hit["score"] == pytest.approx(want.score, abs=1e-5)
        assert hit["scores"] == pytest.approx(want.scores, abs=1e-5)


@pytest.mark.parametrize("weights, filter", [(None, None), ({WANT: 2.0}, {"shop": ["north", "south"]})])
def test_combined_search_equals_the_library(client, paths, weights, filter) -> None:
    queries = {FEEL: "I am angry", WANT: "my money back"}
    response = client.post("/indexes/reviews/search", json={"queries": queries, "weights": weights, "k": 3,
                                                            "filter": filter})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["instructions"] == [FEEL, WANT]
    with library(paths) as index:
        assert_same_hits(body["hits"], index.search_combined(queries, k=3, weights=weights, filter=filter))


def test_single_search_hits_gain_scores_and_answers(client, paths) -> None:
    body = client.post("/indexes/reviews/search", json={"query": "refund", "instruction": WANT, "k": 2}).json()
    with library(paths) as index:
        assert_same_hits(body["hits"], index.search("refund", WANT, k=2))
    assert body["hits"][0]["answers"] == {WANT: body["hits"][0]["answer"]}


def test_facets_and_answer_filters_equal_the_library(client, paths) -> None:
    with library(paths) as index:
        facets = index.facets(FEEL)
        answer = facets[0][0]
        flt = {"$answer": {FEEL: [answer.upper()]}}
        filtered = index.facets(WANT, k=1, filter=flt)
        hits = index.search_combined({FEEL: "x", WANT: "y"}, k=10, filter=flt)
    body = client.get("/indexes/reviews/facets", params={"instruction": FEEL}).json()
    assert body == {"index": "reviews", "instruction": FEEL,
                    "facets": [{"answer": a, "count": n} for a, n in facets]}
    assert sum(f["count"] for f in body["facets"]) == len(DOCS)
    body = client.get("/indexes/reviews/facets", params={"instruction": WANT, "k": 1,
                                                         "filter": json.dumps(flt)}).json()
    assert [(f["answer"], f["count"]) for f in body["facets"]] == filtered
    found = client.post("/indexes/reviews/search", json={"queries": {FEEL: "x", WANT: "y"}, "filter": flt}).json()
    assert_same_hits(found["hits"], hits)
    assert found["hits"] and all(normalise_answer(hit["answers"][FEEL]) == answer for hit in found["hits"])


BAD = [
    ("GET", "/indexes/plain/facets?instruction=" + FEEL, None, 409, "answers=False"),
    ("POST", "/indexes/plain/search", {"query": "x", "instruction": FEEL, "filter": {"$answer": {FEEL: "a"}}}, 409,
     "answers=False"),
    ("GET", "/indexes/reviews/facets?instruction=Where%3F", None, 404, "known instructions"),
    ("GET", "/indexes/reviews/facets?instruction=" + FEEL + "&filter={oops", None, 400, "filter is not valid JSON"),
    ("GET", "/indexes/reviews/facets?instruction=" + FEEL + "&filter=[1]", None, 400, "must be a JSON object"),
    ("GET", "/indexes/reviews/facets?instruction=" + FEEL + "&k=0", None, 400, "k"),
    ("GET", "/indexes/nope/facets?instruction=" + FEEL, None, 404, "no index named 'nope'"),
    ("POST", "/indexes/reviews/search", {"query": "x", "queries": {FEEL: "x"}}, 400, "not both or neither"),
    ("POST", "/indexes/reviews/search", {"k": 3}, 400, "not both or neither"),
    ("POST", "/indexes/reviews/search", {"queries": {FEEL: "x"}, "instruction": FEEL}, 400, "instruction goes with"),
    ("POST", "/indexes/reviews/search", {"query": "x", "instruction": FEEL, "weights": {FEEL: 1}}, 400,
     "weights weigh"),
    ("POST", "/indexes/reviews/search", {"queries": {}}, 400, "non-empty mapping"),
    ("POST", "/indexes/reviews/search", {"queries": {FEEL: "x"}, "weights": {WANT: 1}}, 400, "has no query"),
    ("POST", "/indexes/reviews/search", {"queries": {FEEL: "x", "Where?": "y"}}, 404, "known instructions"),
    ("POST", "/indexes/reviews/search", {"queries": {FEEL: "x"}, "filter": {"$or": []}}, 400, "unknown filter key"),
]


@pytest.mark.parametrize("method, path, body, status, phrase", BAD, ids=[f"{b[0]} {b[1]} {b[4]}" for b in BAD])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(client, method, path, body, status, phrase) -> None:
    response = client.request(method, path, json=body) if body is not None else client.request(method, path)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert phrase in error["message"] and error["code"]


def test_the_api_key_guards_facets_and_combined_search(paths) -> None:
    encoder = tiny_server_encoder()
    index = InstructionIndex.open(paths["reviews"], model=encoder, read_only=True)
    with running(encoder, {"reviews": index}, Settings(api_key="s3cret", read_only=True)) as (url, _):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            assert httpx.get(f"{url}/indexes/reviews/facets", params={"instruction": FEEL},
                             headers=headers).status_code == 401
            assert httpx.post(f"{url}/indexes/reviews/search", json={"queries": {FEEL: "x"}},
                              headers=headers).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{url}/indexes/reviews/facets", params={"instruction": FEEL}, headers=good).status_code == 200
