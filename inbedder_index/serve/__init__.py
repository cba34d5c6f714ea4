"""``inbedder-index serve``: one loaded model and open indexes behind an HTTP API (FastAPI + uvicorn).

- ``POST /v1/embeddings``: OpenAI's request and response, plus ``instruction``.
- ``/indexes/...``: search, add, upsert and delete on the open indexes; ``GET /healthz``, ``/metrics``.
- Concurrent embedding requests are batched on one worker thread (``batching``).
- ``GET /ui/``: the explorer page (``ui``, files in ``static/``), off with ``Settings(ui=False)``.

``Service`` holds the model and indexes, ``create_app`` builds the ASGI app, ``run`` serves it
in the foreground and ``background`` on a thread. ``RemoteInBedder`` (``client``) is the other
end: an ``InBedder`` whose model runs in such a server. Needs the ``serve`` extra.
"""

from __future__ import annotations

from .app import create_app
from .server import background, run
from .service import Service, Settings

__all__ = ["Service", "Settings", "background", "create_app", "run"]
