"""Where the tests find a real Qdrant server, and a faulty network peer for the retry tests.

No registry this project installs from ships the Qdrant server (PyPI, npm and Debian were
searched: only clients, MCP wrappers and the embedded ``qdrant-edge-py``), so the server
tests run against the server named by ``INBEDDER_INDEX_TEST_QDRANT_URL`` (with
``INBEDDER_INDEX_TEST_QDRANT_API_KEY`` if it needs one) and are skipped, with that reason,
where none is named. Collections they create carry a random prefix and are dropped at the end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

URL_VARIABLE = "INBEDDER_INDEX_TEST_QDRANT_URL"
API_KEY_VARIABLE = "INBEDDER_INDEX_TEST_QDRANT_API_KEY"
SKIP_REASON = (
    f"no Qdrant server: set {URL_VARIABLE}=http://HOST:6333 (and {API_KEY_VARIABLE} if it needs a key) "
    "to run the server tests; no package on the reachable registries ships the server binary"
)


def server_url() -> str | None:
    return os.environ.get(URL_VARIABLE) or None


def server_api_key() -> str | None:
    return os.environ.get(API_KEY_VARIABLE) or None


# --------------------------------------------------------------------------- a faulty peer

Reply = Callable[[socket.socket, bytes], None]
"""What the peer does with one request: answer it (or reset, or stall)."""

OK_COLLECTIONS = b'{"result":{"collections":[]},"status":"ok","time":0.0}'


def http_reply(status: int, body: bytes = b"{}") -> Reply:
    reason = {200: "OK", 503: "Service Unavailable", 502: "Bad Gateway"}.get(status, "Status")

    def reply(conn: socket.socket, request: bytes) -> None:
        conn.sendall(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                     b"Connection: close\r\n\r\n%s" % (status, reason.encode(), len(body), body))
    return reply


def reset(conn: socket.socket, request: bytes) -> None:
    """Close with RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")


def stall(seconds: float) -> Reply:
    def reply(conn: socket.socket, request: bytes) -> None:
        time.sleep(seconds)
    return reply


@dataclass
class FaultyPeer:
    """A TCP server on 127.0.0.1 that answers its n-th connection with ``replies[n]`` (the last repeats)."""

    replies: list[Reply]
    requests: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except OSError:  # the accept timeout, so that stop() is noticed
                continue
            with conn:
                conn.settimeout(5)
                try:
                    request = conn.recv(65536)
                except OSError:
                    continue
                self.requests.append(request)
                self.replies[min(len(self.requests), len(self.replies)) - 1](conn, request)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close()
