"""``inbedder-index serve`` over real HTTP: a real uvicorn server on 127.0.0.1 (free port), a tiny model,
real FAISS indexes; called with httpx and with the official openai client."""

from __future__ import annotations

import asyncio
import base64
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from corpora import FEEL, SMALL_CORPUS, WANT, tiny_encoder
from prometheus_client.parser import text_string_to_metric_families
from serving import running, start_cli_server, stop, tiny_server_encoder

from inbedder_index import InstructionIndex
from inbedder_index.errors import IndexLockedError
from inbedder_index.serve import Service, Settings
from tiny_models import save_tiny

TEXTS = ["I am furious, refund me now.", "Thanks, the kettle works!", "", "Where is my parcel?"]
DOCS = [{"id": doc_id, "text": text, "metadata": metadata} for doc_id, text, metadata in SMALL_CORPUS]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def build_index(path: Path) -> Path:
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        index.add(DOCS)
        index.add_instructions([FEEL, WANT])
    return path


def metric(url: str, name: str, headers: dict | None = None) -> float:
    """One sample's value from /metrics (``name`` as exported, e.g. ``inbedder_queue_depth``)."""
    text = httpx.get(f"{url}/metrics", headers=headers).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not in /metrics")


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def index_path(tmp_path_factory) -> Path:
    return build_index(tmp_path_factory.mktemp("serve") / "reviews")


@pytest.fixture(scope="module")
def server(index_path) -> Iterator[tuple[str, Service]]:
    encoder = tiny_server_encoder()
    with running(encoder, {"reviews": InstructionIndex.open(index_path, model=encoder, read_only=True)},
                 Settings(read_only=True)) as served:
        yield served


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], timeout=30) as http:
        yield http


def hold_worker(service: Service) -> tuple[threading.Event, threading.Thread]:
    """Occupy the worker thread until the returned event is set, so requests pile up in the queue."""
    gate, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        gate.wait(30)

    thread = threading.Thread(target=asyncio.run, args=(service.batcher.call(hold),))
    thread.start()
    started.wait(10)
    return gate, thread


# ----------------------------------------------------------------- /v1/embeddings


def test_the_server_model_is_the_in_process_one(client) -> None:
    card = client.get("/v1/models").json()["data"][0]
    assert (card["id"], card["dim"], card["fingerprint"]) == ("tiny-llama", tiny_encoder().dim,
                                                             tiny_encoder().fingerprint)
    assert client.get("/v1/models/tiny-llama").json()["fingerprint"] == card["fingerprint"]


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_embeddings_equal_in_process_encode(client, encoding_format) -> None:
    body = client.post("/v1/embeddings", json={"input": TEXTS, "instruction": FEEL, "model": "tiny-llama",
                                               "encoding_format": encoding_format}).json()
    assert body["object"] == "list" and body["model"] == "tiny-llama"
    assert [item["index"] for item in body["data"]] == list(range(len(TEXTS)))
    if encoding_format == "base64":
        vectors = np.stack([np.frombuffer(base64.b64decode(i["embedding"]), dtype="<f4") for i in body["data"]])
    else:
        vectors = np.array([item["embedding"] for item in body["data"]])
    assert cosines(vectors, tiny_encoder().encode(TEXTS, FEEL)).min() >= 0.99999
    tokens = sum(len(p) for p in tiny_encoder().prompts.build_many(TEXTS, FEEL))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    single = client.post("/v1/embeddings", json={"input": TEXTS[0], "instruction": WANT}).json()["data"]
    assert len(single) == 1 and cosines(np.array(single[0]["embedding"]), tiny_encoder().encode(TEXTS[0], WANT)) \
        >= 0.99999


def test_the_openai_client_works_with_the_instruction_in_extra_body(server) -> None:
    api = openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused")
    assert [m.id for m in api.models.list()] == ["tiny-llama"]
    for encoding_format in (openai.NOT_GIVEN, "float"):
        result = api.embeddings.create(model="tiny-llama", input=TEXTS, encoding_format=encoding_format,
                                       extra_body={"instruction": WANT})
        vectors = np.array([item.embedding for item in result.data])
        assert cosines(vectors, tiny_encoder().encode(TEXTS, WANT)).min() >= 0.99999
        assert result.usage.prompt_tokens == sum(len(p) for p in tiny_encoder().prompts.build_many(TEXTS, WANT))
    with pytest.raises(openai.BadRequestError, match="instruction is required"):
        api.embeddings.create(model="tiny-llama", input="x")
    with pytest.raises(openai.NotFoundError, match="not served here"):
        api.embeddings.create(model="text-embedding-3-small", input="x", extra_body={"instruction": FEEL})


def test_an_alias_of_the_served_model_is_the_served_model(client, monkeypatch) -> None:
    """OpenAI-style callers name the model as users know it: the alias resolves to the served version."""
    from inbedder_index import models

    monkeypatch.setitem(models.ALIASES, "tiny", "tiny-llama")
    body = client.post("/v1/embeddings", json={"input": TEXTS[:1], "instruction": FEEL, "model": "tiny"})
    assert body.status_code == 200 and body.json()["model"] == "tiny-llama"
    assert client.get("/v1/models/tiny").json()["id"] == "tiny-llama"
    monkeypatch.setitem(models.ALIASES, "tiny", "tiny-llama-v9")  # an alias of another version is not served
    assert client.post("/v1/embeddings", json={"input": "x", "instruction": FEEL, "model": "tiny"}).status_code == 404


def test_a_default_instruction_serves_requests_that_name_none() -> None:
    with running(settings=Settings(default_instruction=WANT)) as (url, _):
        body = httpx.post(f"{url}/v1/embeddings", json={"input": TEXTS[:2]}).json()
    assert cosines(np.array([d["embedding"] for d in body["data"]]), tiny_encoder().encode(TEXTS[:2], WANT)).min() \
        >= 0.99999


# ----------------------------------------------------------------- indexes


@pytest.mark.parametrize("instruction, filter", [(FEEL, None), (WANT, {"shop": "north"}), (WANT, {"shop": ["east", "south"]})])
def test_search_hits_equal_instruction_index_search(client, index_path, instruction, filter) -> None:
    query = "I want my money back"
    body = client.post("/indexes/reviews/search", json={"query": query, "instruction": instruction, "k": 3,
                                                       "filter": filter}).json()
    with InstructionIndex.open(index_path, model=tiny_encoder(), read_only=True) as index:
        expected = index.search(query, instruction, k=3, filter=filter)
    assert body["instruction"] == instruction and len(body["hits"]) == len(expected) > 0
    for got, hit in zip(body["hits"], expected):
        assert (got["id"], got["text"], got["metadata"], got["answer"]) == (hit.id, hit.text, hit.metadata, hit.answer)
        assert got["score"] == pytest.approx(hit.score, abs=1e-5)


def test_listing_and_info_show_what_info_shows(client, index_path) -> None:
    listing = client.get("/indexes").json()["indexes"]
    assert listing == [{"name": "reviews", "path": str(index_path), "documents": len(DOCS), "instructions": [FEEL, WANT]}]
    info = client.get("/indexes/reviews").json()
    with InstructionIndex.open(index_path, read_only=True) as index:
        stats = index.stats()
    assert info["name"] == "reviews" and info["documents"] == stats["documents"] == len(DOCS)
    assert info["model"] == stats["model"] and [c["instruction"] for c in info["collections"]] == [FEEL, WANT]
    assert client.get("/healthz").json() == {"status": "ok"}


def test_a_writer_adds_upserts_and_deletes_holding_the_lock(tmp_path) -> None:
    path = build_index(tmp_path / "writable")
    encoder = tiny_server_encoder()
    with running(encoder, {"w": InstructionIndex.open(path, model=encoder)}) as (url, _):
        with pytest.raises(IndexLockedError):  # the server holds the writer lock, as the CLI does
            InstructionIndex.open(path, model=tiny_encoder())
        new = {"id": "e", "text": "A brand new message about a broken drill.", "metadata": {"shop": "west"}}
        added = httpx.post(f"{url}/indexes/w/documents", json={"documents": [new]})
        assert added.status_code == 200 and added.json()["encoded"] == ["e"]
        for instruction in (FEEL, WANT):
            hits = httpx.post(f"{url}/indexes/w/search", json={"query": new["text"], "instruction": instruction,
                                                               "k": 1}).json()["hits"]
            assert hits[0]["id"] == "e" and hits[0]["metadata"] == {"shop": "west"}
        again = httpx.post(f"{url}/indexes/w/documents", json={"documents": [new]})
        assert again.status_code == 200 and again.json()["encoded"] == []  # the same document: nothing to do
        changed = {**new, "text": "Changed text entirely."}
        conflict = httpx.post(f"{url}/indexes/w/documents", json={"documents": [changed]})
        assert conflict.status_code == 409 and "'e'" in conflict.json()["error"]["message"]
        upserted = httpx.post(f"{url}/indexes/w/documents", json={"documents": [changed], "upsert": True})
        assert upserted.status_code == 200 and upserted.json()["encoded"] == ["e"]
        deleted = httpx.request("DELETE", f"{url}/indexes/w/documents", json={"ids": ["e", "missing"]})
        assert deleted.status_code == 200 and deleted.json()["deleted"] == ["e"]
        assert httpx.get(f"{url}/indexes/w").json()["documents"] == len(DOCS)
    with InstructionIndex.open(path, model=tiny_encoder()) as index:  # lock released; the writes are there
        assert sorted(index.ids()) == sorted(d["id"] for d in DOCS)


def test_read_only_serves_search_and_refuses_writes(client) -> None:
    for method, body in (("POST", {"documents": [{"id": "z", "text": "x"}]}), ("DELETE", {"ids": ["a"]})):
        response = client.request(method, "/indexes/reviews/documents", json=body)
        assert response.status_code == 403 and "--read-only" in response.json()["error"]["message"]


# ----------------------------------------------------------------- bad requests


LONG_INSTRUCTION = " ".join(["What exactly does the customer want from the shop in this message?"] * 12)
BAD = [
    ("POST", "/v1/embeddings", {"input": "x"}, 400, "instruction is required"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": FEEL, "model": "gpt-4"}, 404, "not served here"),
    ("POST", "/v1/embeddings", {"input": [1, 2], "instruction": FEEL}, 400, "token ids"),
    ("POST", "/v1/embeddings", {"input": [[1, 2]], "instruction": FEEL}, 400, "token ids"),
    ("POST", "/v1/embeddings", {"input": [], "instruction": FEEL}, 400, "input is empty"),
    ("POST", "/v1/embeddings", {"input": ["a", 3], "instruction": FEEL}, 400, "input"),
    ("POST", "/v1/embeddings", {"instruction": FEEL}, 400, "input: Field required"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": "   "}, 400, "blank"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": LONG_INSTRUCTION}, 400, "no room"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": FEEL, "encoding_format": "int8"}, 400, "encoding_format"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": FEEL, "dimensions": 7}, 400, "dimensions=7"),
    ("POST", "/v1/embeddings", {"input": "x", "instruction": FEEL, "instructions": "typo"}, 400, "instructions"),
    ("POST", "/v1/embeddings", b'{"input": "x",', 400, "not valid JSON"),
    ("POST", "/v1/embeddings", [1, 2], 400, "JSON object"),
    ("POST", "/indexes/nope/search", {"query": "x", "instruction": FEEL}, 404, "no index named 'nope'"),
    ("POST", "/indexes/reviews/search", {"query": "x", "instruction": "Where?"}, 404, "known instructions"),
    ("POST", "/indexes/reviews/search", {"query": "x", "instruction": FEEL, "k": 0}, 400, "k:"),
    ("POST", "/indexes/reviews/search", {"query": "x", "instruction": FEEL, "filter": {"shop": {"$gt": 1}}}, 400,
     "filter field 'shop'"),
    ("POST", "/indexes/reviews/search", {"instruction": FEEL}, 400, "give either query (with instruction) or queries"),
    ("POST", "/indexes/reviews/search", {"query": 3, "instruction": FEEL}, 400, "query"),
    ("GET", "/v1/models/other", None, 404, "not served here"),
    ("GET", "/nowhere", None, 404, "GET /nowhere"),
    ("PUT", "/v1/embeddings", {"input": "x"}, 405, "PUT /v1/embeddings"),
]


@pytest.mark.parametrize("method, path, body, status, phrase", BAD, ids=[f"{b[0]} {b[1]} {b[4]}" for b in BAD])
def test_bad_requests_get_a_4xx_json_error_naming_the_problem(client, method, path, body, status, phrase) -> None:
    kwargs = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
        else {"json": body} if body is not None else {}
    response = client.request(method, path, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert phrase in error["message"] and error["type"] == "invalid_request_error" and error["code"]


# ----------------------------------------------------------------- safety


def test_an_api_key_guards_every_route_but_healthz() -> None:
    with running(settings=Settings(api_key="s3cret", default_instruction=FEEL)) as (url, _):
        good = {"Authorization": "Bearer s3cret"}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            for method, path in (("POST", "/v1/embeddings"), ("GET", "/v1/models"), ("GET", "/metrics"),
                                 ("GET", "/indexes")):
                response = httpx.request(method, f"{url}{path}", json={"input": "x"}, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert "API key" in response.json()["error"]["message"]
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.post(f"{url}/v1/embeddings", json={"input": "x"}, headers=good).status_code == 200
        assert metric(url, "inbedder_embedded_texts_total", good) == 1
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret")
        assert len(api.embeddings.create(model="tiny-llama", input=["a", "b"]).data) == 2
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong").embeddings.create(model="tiny-llama", input="a")


def test_request_size_and_input_count_limits_give_413() -> None:
    with running(settings=Settings(max_inputs=4, max_queue=16, max_request_bytes=2000, default_instruction=FEEL)) \
            as (url, _):
        many = httpx.post(f"{url}/v1/embeddings", json={"input": ["x"] * 5})
        assert many.status_code == 413 and "up to 4" in many.json()["error"]["message"]
        big = httpx.post(f"{url}/v1/embeddings", json={"input": ["x" * 3000]})
        assert big.status_code == 413 and "2000" in big.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts what arrives
            yield b'{"input": ["'
            for _ in range(10):
                yield b"y" * 500
            yield b'"]}'

        streamed = httpx.post(f"{url}/v1/embeddings", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "request_too_large"
        assert httpx.post(f"{url}/v1/embeddings", json={"input": ["x"] * 4}).status_code == 200


def test_a_full_queue_answers_503_with_retry_after_and_never_grows() -> None:
    with running(settings=Settings(max_inputs=4, max_queue=4, default_instruction=FEEL)) as (url, service):
        gate, holder = hold_worker(service)
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": TEXTS}, timeout=30)
            wait_for(lambda: metric(url, "inbedder_queue_depth") == 4)
            refused = httpx.post(f"{url}/v1/embeddings", json={"input": "one more"})
            assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "queue_full"
            assert metric(url, "inbedder_queue_depth") == 4 and metric(url, "inbedder_queue_rejections_total") == 1
            gate.set()
            assert waiting.result().status_code == 200
        holder.join()
        assert metric(url, "inbedder_queue_depth") == 0


def test_concurrent_requests_share_one_encode_batch() -> None:
    texts = [f"message number {i}: where is my parcel?" for i in range(32)]
    with running(settings=Settings(default_instruction=FEEL)) as (url, service):
        before = metric(url, "inbedder_batch_requests_count")
        gate, holder = hold_worker(service)
        with ThreadPoolExecutor(32) as pool:
            futures = [pool.submit(httpx.post, f"{url}/v1/embeddings", json={"input": t}, timeout=30) for t in texts]
            wait_for(lambda: metric(url, "inbedder_queue_depth") == 32)
            gate.set()
            vectors = np.array([f.result().json()["data"][0]["embedding"] for f in futures])
        holder.join()
        assert metric(url, "inbedder_batch_requests_count") - before == 1  # all 32 in one encode call
        assert metric(url, "inbedder_batch_texts_sum") == 32
    assert cosines(vectors, tiny_encoder().encode(texts, FEEL)).min() >= 0.99999


def test_metrics_are_prometheus_text(client, server) -> None:
    client.post("/v1/embeddings", json={"input": ["a", "b"], "instruction": FEEL})
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    assert {"inbedder_http_requests", "inbedder_http_request_seconds", "inbedder_batch_texts",
            "inbedder_batch_requests", "inbedder_queue_depth", "inbedder_encode_seconds"} <= set(families)
    assert any(s.labels == {"route": "/v1/embeddings", "method": "POST", "status": "200"} and s.value >= 1
               for s in families["inbedder_http_requests"].samples)


# ----------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("model") / "tiny-llama")


def test_cli_serve_holds_the_lock_answers_and_stops_quietly(tmp_path, model_dir) -> None:
    path = tmp_path / "cli-index"
    with InstructionIndex.open(path, model=str(model_dir)) as index:
        index.add(DOCS)
        index.add_instruction(FEEL)
    process, url = start_cli_server(str(path), env={"INBEDDER_INDEX_API_KEY": "k"})
    try:
        with pytest.raises(IndexLockedError):
            InstructionIndex.open(path, model=tiny_encoder())
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        auth = {"Authorization": "Bearer k"}
        assert httpx.get(f"{url}/indexes").status_code == 401
        assert [i["name"] for i in httpx.get(f"{url}/indexes", headers=auth).json()["indexes"]] == ["cli-index"]
        hits = httpx.post(f"{url}/indexes/cli-index/search", json={"query": DOCS[1]["text"], "instruction": FEEL},
                          headers=auth).json()["hits"]
        assert hits[0]["id"] == DOCS[1]["id"] and len(hits) == len(DOCS)
    finally:
        code, err = stop(process, signal.SIGTERM)  # what a service manager sends: a clean stop, lock released
    assert code == 0, err
    assert "Loading weights" not in err and "Warning" not in err and "Traceback" not in err, err
    InstructionIndex.open(path, model=tiny_encoder()).close()  # the lock was released


def test_cli_serve_refuses_what_it_cannot_serve(tmp_path, capsys) -> None:
    from inbedder_index.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no index folder" in capsys.readouterr().err
    assert main(["serve", "--max-inputs", "10", "--max-queue", "5"]) == 2
    assert "max_queue" in capsys.readouterr().err


# ----------------------------------------------------------------- the real model


@pytest.mark.slow
def test_the_default_model_over_http_equals_in_process(default_encoder) -> None:
    with running(default_encoder) as (url, _):
        api = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        texts = ["I am so angry, give me my money back!", "Thanks, the parcel arrived early."]
        result = api.embeddings.create(model=default_encoder.model_id, input=texts, extra_body={"instruction": FEEL})
    vectors = np.array([item.embedding for item in result.data])
    assert cosines(vectors, default_encoder.encode(texts, FEEL)).min() >= 0.99999
