"""Running the app on uvicorn: in the foreground (the CLI) or on a background thread (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

from .._util import import_optional
from .app import create_app
from .service import Service

uvicorn = import_optional("uvicorn", "serve")

logger = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (``port=0``: a free one), so the caller knows the port before serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({error.strerror}); pick another --port or --host") from error
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _server(service: Service, verbose: bool) -> uvicorn.Server:
    config = uvicorn.Config(create_app(service), log_level="info" if verbose else "warning",
                            access_log=verbose, lifespan="off", timeout_graceful_shutdown=10)
    return uvicorn.Server(config)


def run(service: Service, *, host: str = "127.0.0.1", port: int = 8000, verbose: bool = False,
        on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until Ctrl-C or SIGTERM, then return (uvicorn has finished the requests in flight by then);
    ``on_ready(url)`` is called once listening."""
    sock = bind(host, port)
    if on_ready is not None:
        on_ready(url_of(sock))
    # uvicorn shuts down gracefully, then re-raises the signal: SIGINT arrives as KeyboardInterrupt,
    # SIGTERM as _Stopped (instead of killing the process before the caller releases the indexes).
    previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        _server(service, verbose).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        logger.info("stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


class _Stopped(Exception):
    pass


def _stopped(signum: int, frame: object) -> None:
    raise _Stopped


@contextlib.contextmanager
def background(service: Service, *, host: str = "127.0.0.1", port: int = 0,
               verbose: bool = False) -> Iterator[str]:
    """Serve on a thread while the block runs; yields the base URL. The service stays open."""
    sock = bind(host, port)
    server = _server(service, verbose)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="inbedder-serve", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start; run with verbose=True to see why")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join()
        sock.close()
