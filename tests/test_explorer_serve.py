"""The explorer's routes over real HTTP: ``GET /indexes/{name}/map`` and the page's files at ``/ui/``,
on a real uvicorn server on 127.0.0.1 (free port) over a tiny model and a real FAISS index."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import httpx
import pytest
from corpora import FEEL, WANT, feedback_documents, tiny_encoder
from serving import running, start_cli_server, stop, tiny_server_encoder

from inbedder_index import InstructionIndex
from inbedder_index.explore import MAX_CLUSTERS, MAX_POINTS, collection_map
from inbedder_index.serve import Service, Settings
from tiny_models import save_tiny

KEY = "explorer-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}


@pytest.fixture(scope="module")
def index_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explorer") / "reviews"
    with InstructionIndex.open(path, model=tiny_encoder()) as index:
        index.add(feedback_documents())
        index.add_instructions([FEEL, WANT])
    return path


@pytest.fixture(scope="module")
def server(index_path) -> Iterator[tuple[str, Service]]:
    encoder = tiny_server_encoder()
    with running(encoder, {"reviews": InstructionIndex.open(index_path, model=encoder, read_only=True)},
                 Settings(api_key=KEY, read_only=True)) as served:
        yield served


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server[0], headers=AUTH, timeout=30) as http:
        yield http


# ----------------------------------------------------------------- the map


@pytest.mark.parametrize("params", [{"limit": 4, "clusters": 2}, {}], ids=["sampled", "defaults"])
def test_the_map_route_answers_what_collection_map_computes(client, index_path, params) -> None:
    response = client.get("/indexes/reviews/map", params={"instruction": FEEL, **params})
    assert response.status_code == 200, response.text
    with InstructionIndex.open(index_path, model=tiny_encoder(), read_only=True) as index:
        expected = collection_map(index, FEEL, **params).to_dict()
    assert response.json() == json.loads(json.dumps(expected))
    body = response.json()
    documents = len(feedback_documents())
    assert body["total"] == documents and body["sampled"] == ("limit" in params)
    assert len(body["points"]) == params.get("limit", documents)
    assert len(body["clusters"]) == params.get("clusters", 8)


@pytest.mark.parametrize("params, status, phrase", [
    ({"instruction": "Who wrote this?"}, 404, "Who wrote this?"),
    ({"instruction": FEEL, "limit": 0}, 400, "limit"),
    ({"instruction": FEEL, "limit": MAX_POINTS + 1}, 400, "limit"),
    ({"instruction": FEEL, "clusters": MAX_CLUSTERS + 1}, 400, "clusters"),
    ({"instruction": FEEL, "clusters": "many"}, 400, "clusters"),
    ({}, 400, "instruction is required"),
])
def test_the_map_route_refuses_bad_requests_naming_the_problem(client, params, status, phrase) -> None:
    response = client.get("/indexes/reviews/map", params=params)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]["message"]


def test_the_map_of_an_unknown_index_is_404(client) -> None:
    response = client.get("/indexes/nope/map", params={"instruction": FEEL})
    assert response.status_code == 404 and "no index named 'nope'" in response.json()["error"]["message"]


# ----------------------------------------------------------------- the page


def test_the_page_and_its_files_are_the_packaged_ones_with_a_policy_that_allows_only_this_server(server) -> None:
    url = server[0]
    static = resources.files("inbedder_index.serve") / "static"
    for name, media_type in PAGE_FILES.items():
        response = httpx.get(f"{url}/ui/{'' if name == 'index.html' else name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type)
        assert response.content == (static / name).read_bytes()
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy and "script-src 'self'" in policy
        assert response.headers["x-content-type-options"] == "nosniff"
    page = httpx.get(f"{url}/ui/").text
    assert '<script src="app.js" defer></script>' in page and '<link rel="stylesheet" href="app.css">' in page
    assert "http://" not in page and "https://" not in page
    css = (static / "app.css").read_text()
    assert "url(" not in css and "@import" not in css  # no fonts or images fetched by the style sheet
    redirect = httpx.get(f"{url}/ui")
    assert redirect.status_code == 308 and redirect.headers["location"] == "ui/"
    assert httpx.get(f"{url}/ui", follow_redirects=True).text == page
    missing = httpx.get(f"{url}/ui/secrets.txt")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "http_error"


def test_the_page_holds_no_data_and_every_route_it_calls_needs_the_key(server) -> None:
    url = server[0]
    for name in ("", "app.js", "app.css"):  # a browser cannot send the key when it opens a page
        response = httpx.get(f"{url}/ui/{name}")
        assert response.status_code == 200
        assert "reviews" not in response.text and feedback_documents()[0]["text"] not in response.text
    calls = [("GET", "/indexes", None), ("GET", "/indexes/reviews/map", {"instruction": FEEL}),
             ("GET", "/indexes/reviews/facets", {"instruction": FEEL}),
             ("POST", "/indexes/reviews/search", None)]
    body = {"queries": {FEEL: "angry", WANT: "a refund"}, "k": 3}
    for method, path, params in calls:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = httpx.request(method, f"{url}{path}", params=params, json=body if method == "POST" else None,
                                    headers=headers)
            assert refused.status_code == 401 and "API key" in refused.json()["error"]["message"], path
        allowed = httpx.request(method, f"{url}{path}", params=params, json=body if method == "POST" else None,
                                headers=AUTH)
        assert allowed.status_code == 200, (path, allowed.text)


def test_settings_ui_false_serves_the_api_without_the_page(index_path) -> None:
    encoder = tiny_server_encoder()
    with running(encoder, {"reviews": InstructionIndex.open(index_path, model=encoder, read_only=True)},
                 Settings(read_only=True, ui=False)) as (url, _):
        for path in ("/ui/", "/ui/app.js", "/ui/app.css", "/ui"):
            assert httpx.get(f"{url}{path}").status_code == 404, path
        assert httpx.get(f"{url}/indexes/reviews/map", params={"instruction": WANT}).status_code == 200


def test_cli_serve_no_ui_turns_the_page_off(tmp_path) -> None:
    folder = save_tiny(tmp_path / "tiny-llama")
    path = tmp_path / "cli-index"
    with InstructionIndex.open(path, model=str(folder)) as index:
        index.add(feedback_documents()[:3])
        index.add_instruction(FEEL)
    process, url = start_cli_server(str(path), "--no-ui", "--read-only", env={"INBEDDER_INDEX_API_KEY": KEY})
    try:
        assert httpx.get(f"{url}/ui/", headers=AUTH).status_code == 404
        assert httpx.get(f"{url}/ui/app.js", headers=AUTH).status_code == 404
        assert [i["name"] for i in httpx.get(f"{url}/indexes", headers=AUTH).json()["indexes"]] == ["cli-index"]
    finally:
        code, err = stop(process)
    assert code == 0, err
