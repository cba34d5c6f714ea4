"""``RemoteInBedder`` against servers that misbehave: a fake ``/v1`` server on 127.0.0.1 (a free
port, a thread) answers with a tiny model's real vectors and then spoils them one way at a time.
Every spoiled answer must be one ``RemoteEmbedderError`` naming the server and the fault, and an
index that adds documents through such a client stores no wrong vector. One test runs the real
``inbedder-index serve`` app and a fresh interpreter, to show the client imports no PyTorch."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any

import numpy as np
import pytest

pytest.importorskip("httpx")

from inbedder_index import InstructionIndex  # noqa: E402
from inbedder_index.client import RemoteInBedder, retry_after  # noqa: E402
from inbedder_index.encoder import InBedder  # noqa: E402
from inbedder_index.errors import ModelNotAvailableError, RemoteEmbedderError  # noqa: E402
from serving import running, tiny_server_encoder  # noqa: E402

FEEL = "How does the customer feel?"
TEXTS = ["I am furious, the parcel never arrived.", "Thanks, it works!", "Where is my parcel?"]

Answer = tuple[int, dict[str, str], Any]  # status, headers, body (an object sent as JSON, or raw bytes)
Fault = Callable[[str, Answer], Answer]


class FakeServer:
    """``/v1/models`` and ``/v1/embeddings`` with a real model's answers, passed through ``fault``."""

    def __init__(self, encoder: InBedder) -> None:
        self.encoder = encoder
        self.fault: Fault | None = None
        self.requests = 0

    def card(self) -> dict[str, Any]:
        e = self.encoder
        return {"id": e.model_id, "object": "model", "dim": e.dim, "fingerprint": e.fingerprint,
                "max_length": e.max_length, "kind": e.kind}

    def answer(self, method: str, path: str, body: Any) -> Answer:
        self.requests += 1
        if (method, path) == ("GET", "/v1/models"):
            answer: Answer = (200, {}, {"object": "list", "data": [self.card()]})
        elif (method, path) == ("POST", "/v1/embeddings"):
            vectors = self.encoder.encode(body["input"], body["instruction"])
            data = [{"object": "embedding", "index": i, "embedding": _vector_of(v)} for i, v in enumerate(vectors)]
            answer = (200, {}, {"object": "list", "data": data, "model": self.encoder.model_id,
                                "fingerprint": self.encoder.fingerprint})
        else:
            answer = (404, {}, {"error": {"message": f"no {path}"}})
        return self.fault(path, answer) if self.fault else answer


@contextlib.contextmanager
def serving_fake(server: FakeServer) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

        def log_message(self, *args: Any) -> None:
            pass

        def _reply(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, headers, payload = server.answer(method, self.path, body)
            if status == 0:  # hang up without answering
                self.close_connection = True
                return
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            for name, value in {"content-type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            self._reply("GET")

        def do_POST(self) -> None:
            self._reply("POST")

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


@pytest.fixture(scope="module")
def encoder() -> InBedder:
    return tiny_server_encoder()


@pytest.fixture
def fake(encoder) -> Iterator[tuple[FakeServer, str]]:
    server = FakeServer(encoder)
    with serving_fake(server) as url:
        yield server, url


# ----------------------------------------------------------------- spoiled answers


def _embeddings(change: Callable[[dict[str, Any]], Any], *, replace: bool = False) -> Fault:
    """A fault that changes the JSON of /v1/embeddings answers in place (or replaces it by what
    ``change`` returns)."""
    def fault(path: str, answer: Answer) -> Answer:
        status, headers, body = answer
        if path != "/v1/embeddings":
            return answer
        changed = change(body)
        return status, headers, changed if replace else body
    return fault


def _card(change: Callable[[dict[str, Any]], None]) -> Fault:
    def fault(path: str, answer: Answer) -> Answer:
        if path == "/v1/models":
            change(answer[2]["data"][0])
        return answer
    return fault


def _vector_of(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode()


def _each_row(change: Callable[[dict[str, Any]], None]) -> Fault:
    return _embeddings(lambda body: [change(item) for item in body["data"]])


FAULTS: dict[str, tuple[Fault, str]] = {
    "an extra row per batch": (_embeddings(lambda b: b["data"].append({**b["data"][0], "index": len(b["data"])})),
                               r"vectors for \d texts"),
    "a missing row": (_embeddings(lambda b: b["data"].pop()), r"vectors for \d texts"),
    "an index twice": (_embeddings(lambda b: b["data"][-1].update(index=0)), "indexes must be 0"),
    "an index out of range": (_embeddings(lambda b: b["data"][-1].update(index=7)), "indexes must be 0"),
    "an index that is text": (_embeddings(lambda b: b["data"][0].update(index="0")), "indexes must be 0"),
    "vectors one value short": (_each_row(lambda item: item.update(
        embedding=_vector_of(np.full(15, 0.25)))), "float32 values take"),
    "all-zero vectors": (_each_row(lambda item: item.update(
        embedding=_vector_of(np.zeros(tiny_server_encoder().dim)))), "length 0"),
    "vectors that are not unit length": (_each_row(lambda item: item.update(
        embedding=_vector_of(2 * np.frombuffer(base64.b64decode(item["embedding"]), "<f4")))), "length 2"),
    "NaN values": (_each_row(lambda item: item.update(
        embedding=_vector_of(np.full(tiny_server_encoder().dim, np.nan)))), "NaN"),
    "floats where base64 was asked": (_each_row(lambda item: item.update(
        embedding=np.frombuffer(base64.b64decode(item["embedding"]), "<f4").tolist())), "list of numbers"),
    "bad base64": (_each_row(lambda item: item.update(embedding="not*base64!")), "not base64"),
    "an embedding that is a number": (_each_row(lambda item: item.update(embedding=3)), "base64 string"),
    "no data list": (_embeddings(lambda b: {**b, "data": {"0": b["data"][0]}}, replace=True), "without a list"),
    "a list, not an object": (_embeddings(lambda b: b["data"], replace=True), "without a list"),
    "another model's vectors": (_embeddings(lambda b: b.update(model="impostor")), "model 'impostor'"),
    "another fingerprint": (_embeddings(lambda b: b.update(fingerprint="0" * 32)), "fingerprint '0000"),
    "no fingerprint with the vectors": (_embeddings(lambda b: b.pop("fingerprint")), "fingerprint None"),
    "an HTML 200": (lambda path, a: (200, {"content-type": "text/html"}, b"<html><body>Welcome</body></html>")
                    if path == "/v1/embeddings" else a, "text/html '<html>"),
    "an empty 200": (lambda path, a: (200, {}, b"") if path == "/v1/embeddings" else a, "empty body"),
    "a model card without fingerprint": (_card(lambda card: card.pop("fingerprint")), "no 'fingerprint'"),
    "a model card whose dim is text": (_card(lambda card: card.update(dim="16")), "'dim' is '16'"),
    "a model card whose dim is zero": (_card(lambda card: card.update(dim=0)), "'dim' is 0"),
    "models that are not a list": (lambda path, a: (200, {}, {"data": "tiny"}) if path == "/v1/models" else a,
                                   "without a list of models"),
    "an HTML card": (lambda path, a: (200, {"content-type": "text/html"}, b"<html></html>")
                     if path == "/v1/models" else a, "not JSON"),
    "a 500": (lambda path, a: (500, {}, {"error": {"message": "the model fell over"}})
              if path == "/v1/embeddings" else a, "500: the model fell over"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_every_spoiled_answer_is_one_error_naming_the_server(fake, fault) -> None:
    server, url = fake
    server.fault, problem = FAULTS[fault]
    client = RemoteInBedder(url, batch_size=2)  # 3 texts: two requests, as a build would send
    try:
        with pytest.raises(RemoteEmbedderError, match=problem) as raised:
            client.encode(TEXTS, FEEL)
        assert url in str(raised.value)
    finally:
        client.close()


def test_an_honest_fake_gives_the_models_vectors(fake, encoder) -> None:
    """The fake itself is sound: without a fault the client returns the model's own vectors."""
    _, url = fake
    client = RemoteInBedder(url, batch_size=2)
    try:
        np.testing.assert_array_equal(client.encode(TEXTS, FEEL), encoder.encode(TEXTS, FEEL))
        assert (client.model_id, client.dim, client.fingerprint) == (encoder.model_id, encoder.dim,
                                                                    encoder.fingerprint)
    finally:
        client.close()


def test_an_index_adding_through_a_spoiled_server_stores_no_wrong_vector(fake, encoder, tmp_path) -> None:
    server, url = fake
    client = RemoteInBedder(url, batch_size=2)
    index = InstructionIndex.open(tmp_path / "index", model=client)
    try:
        index.add([{"id": f"d{i}", "text": text} for i, text in enumerate(TEXTS)])
        index.add_instruction(FEEL, answers=False)
        stored = index.get_vectors(["d0", "d1", "d2"], FEEL)
        for fault in ("an extra row per batch", "all-zero vectors", "an index out of range", "vectors one value short"):
            server.fault = FAULTS[fault][0]
            with pytest.raises(RemoteEmbedderError):
                index.add([{"id": "new", "text": "My order is late again."}])
            with pytest.raises(RemoteEmbedderError):
                index.upsert([{"id": "d1", "text": "Changed: I want a refund."}])
            assert index.get_vectors(["new", "d1"], FEEL).keys() <= {"d1"}
            np.testing.assert_array_equal(index.get_vectors(["d1"], FEEL)["d1"], stored["d1"])
        server.fault = None
        index.upsert([{"id": "new", "text": "My order is late again."}])  # the server mended: the write completes
        np.testing.assert_array_equal(index.get_vectors(["new"], FEEL)["new"],
                                      encoder.encode("My order is late again.", FEEL))
        for doc_id, vector in index.get_vectors(["d0", "d1", "d2"], FEEL).items():
            text = index.get([doc_id])[0].text
            np.testing.assert_array_equal(vector, encoder.encode(text, FEEL))  # every stored vector is the model's
    finally:
        index.close()
        client.close()


# ----------------------------------------------------------------- a busy, slow or absent server


@pytest.mark.parametrize("header", ["Wed, 21 Oct 2015 07:28:00 GMT", "-5", "nan", "soon", "", "0.05"])
def test_any_retry_after_is_a_bounded_wait(fake, encoder, header) -> None:
    server, url = fake
    busy = {"left": 2}

    def fault(path: str, answer: Answer) -> Answer:
        if path == "/v1/embeddings" and busy["left"]:
            busy["left"] -= 1
            return 503, {"retry-after": header} if header else {}, {"error": {"message": "queue full"}}
        return answer

    server.fault = fault
    client = RemoteInBedder(url)
    try:
        started = time.monotonic()
        np.testing.assert_array_equal(client.encode(TEXTS, FEEL), encoder.encode(TEXTS, FEEL))
        assert busy["left"] == 0 and time.monotonic() - started < 5
    finally:
        client.close()


def test_retry_after_reads_seconds_and_dates_and_caps_them() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after(format_datetime(now + timedelta(seconds=10), usegmt=True), now) == 10
    assert retry_after(format_datetime(now + timedelta(hours=5), usegmt=True), now) == 30  # never parked for hours
    assert retry_after(format_datetime(now - timedelta(hours=5), usegmt=True), now) == 0
    assert [retry_after(v) for v in ("2.5", "-5", "1e400", "nan", "inf", "later", None)] == [2.5, 0, 30, 1, 30, 1, 1]


def test_a_slow_server_is_reported_as_slow(fake) -> None:
    server, url = fake

    def slow(path: str, answer: Answer) -> Answer:
        if path == "/v1/embeddings":
            time.sleep(1.5)
        return answer

    server.fault = slow
    client = RemoteInBedder(url, timeout=0.3)
    try:
        with pytest.raises(RemoteEmbedderError, match=f"{url}/v1/embeddings is too slow.*timeout=") as raised:
            client.encode(TEXTS, FEEL)
        assert "start one" not in str(raised.value)
    finally:
        client.close()


def test_a_dropped_connection_is_sent_again(fake, encoder) -> None:
    server, url = fake
    drops = {"left": 1}

    def hang_up(path: str, answer: Answer) -> Answer:
        if path == "/v1/embeddings" and drops["left"]:
            drops["left"] -= 1
            return 0, {}, b""
        return answer

    server.fault = hang_up
    client = RemoteInBedder(url)
    try:
        np.testing.assert_array_equal(client.encode(TEXTS, FEEL), encoder.encode(TEXTS, FEEL))
        assert drops["left"] == 0
    finally:
        client.close()


def test_no_server_says_how_to_start_one() -> None:
    with serving_fake(FakeServer(tiny_server_encoder())) as url:
        pass  # the port is free again
    client = RemoteInBedder(url)
    with pytest.raises(ModelNotAvailableError, match=f"no inbedder-index server answers at {url}.*serve"):
        client.encode(TEXTS, FEEL)


# ----------------------------------------------------------------- the real server, a fresh interpreter


def test_the_real_server_in_a_process_without_torch(encoder) -> None:
    assert not issubclass(RemoteInBedder, InBedder)
    with running() as (url, _):
        script = textwrap.dedent(f"""
            import json, sys
            from inbedder_index.client import RemoteInBedder
            client = RemoteInBedder({url!r}, batch_size=2)
            vectors = client.encode({TEXTS!r}, {FEEL!r})
            heavy = [m for m in ("torch", "transformers") if m in sys.modules]
            print(json.dumps({{"heavy": heavy, "fingerprint": client.fingerprint, "vectors": vectors.tolist()}}))
        """)
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [] and result["fingerprint"] == encoder.fingerprint
    np.testing.assert_array_equal(np.array(result["vectors"], dtype=np.float32), encoder.encode(TEXTS, FEEL))
