"""The service's Prometheus metrics: requests, latencies, batch sizes, queue depth.

Each app gets its own registry, so two servers in one process (tests) never share counts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .._util import import_optional

prometheus = import_optional("prometheus_client", "serve")
prometheus.disable_created_metrics()  # no *_created series: start times say nothing a scraper needs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)


class Metrics:
    """The counters the batcher and the HTTP layer update; ``render()`` is the /metrics body."""

    def __init__(self) -> None:
        self.registry = prometheus.CollectorRegistry()
        r = self.registry
        self.requests = prometheus.Counter("inbedder_http_requests", "HTTP requests by route, method and status",
                                           ["route", "method", "status"], registry=r)
        self.latency = prometheus.Histogram("inbedder_http_request_seconds", "HTTP request latency by route",
                                            ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_texts = prometheus.Histogram("inbedder_batch_texts", "Texts per encode call",
                                                buckets=_SIZE_BUCKETS, registry=r)
        self.batch_requests = prometheus.Histogram("inbedder_batch_requests", "Requests gathered into one batch",
                                                   buckets=_SIZE_BUCKETS, registry=r)
        self.encode_seconds = prometheus.Histogram("inbedder_encode_seconds", "Seconds per encode call",
                                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.queue_depth = prometheus.Gauge("inbedder_queue_depth", "Texts (and index calls) waiting for the model",
                                            registry=r)
        self.rejected = prometheus.Counter("inbedder_queue_rejections", "Requests refused with 503: queue full",
                                           registry=r)
        self.texts = prometheus.Counter("inbedder_embedded_texts", "Texts embedded for /v1/embeddings", registry=r)
        self.tokens = prometheus.Counter("inbedder_prompt_tokens", "Prompt tokens embedded for /v1/embeddings",
                                         registry=r)

    def render(self) -> tuple[bytes, str]:
        return prometheus.generate_latest(self.registry), prometheus.CONTENT_TYPE_LATEST

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """Count and time every HTTP request under its route template (``/indexes/{name}/search``)."""

        async def measured(scope: Scope, receive: Callable[[], Awaitable[Message]],
                           send: Callable[[Message], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = 500
            start = time.perf_counter()

            async def sending(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            try:
                await app(scope, receive, sending)
            finally:
                route = getattr(scope.get("route"), "path", "unmatched")
                self.requests.labels(route, scope["method"], str(status)).inc()
                self.latency.labels(route).observe(time.perf_counter() - start)

        return measured
