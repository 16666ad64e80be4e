"""The server's Prometheus metrics, and the middleware that counts every request."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

log = logging.getLogger("prompttune.serving.server")


class Metrics:
    """One app's collectors, in a registry of their own."""

    def __init__(self, service) -> None:
        self.registry = metrics = CollectorRegistry()
        self.requests_total = Counter(
            "prompttune_requests_total", "HTTP requests", ["endpoint", "status"], registry=metrics
        )
        self.latency = Histogram(
            "prompttune_request_seconds",
            "Request latency",
            ["endpoint"],
            registry=metrics,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.batch_rows = Histogram(
            "prompttune_batch_rows",
            "Rows per model forward",
            registry=metrics,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.batch_requests = Histogram(
            "prompttune_batch_requests",
            "Requests joined per model forward",
            registry=metrics,
            buckets=(1, 2, 4, 8, 16, 32, 64),
        )
        self.decoding_rows = Histogram(
            "prompttune_decoding_sequences",
            "Sequences per step of the continuous batch",
            registry=metrics,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.predictions = Counter(
            "prompttune_predictions_total", "Predicted labels per prompt version", ["prompt", "label"], registry=metrics
        )
        self.generated = Counter(
            "prompttune_generated_sequences_total",
            "Generated sequences per prompt version",
            ["prompt"],
            registry=metrics,
        )
        loaded = Gauge("prompttune_loaded_prompts", "Prompt versions loaded onto the model", registry=metrics)
        loaded.set_function(lambda: service.loaded if service is not None else 0)
        active = Gauge(
            "prompttune_decoding_sequences_active",
            "Sequences in the continuous batch now, and requests waiting to join it",
            ["state"],
            registry=metrics,
        )
        decoder = service.decoder if service is not None else None
        active.labels("decoding").set_function(lambda: len(decoder.sequences) if decoder is not None else 0)
        active.labels("waiting").set_function(lambda: len(decoder.waiting) if decoder is not None else 0)

    def on_batch(self, rows: int, joined: int) -> None:
        self.batch_rows.observe(rows)
        self.batch_requests.observe(joined)

    def count_requests(self, app: FastAPI) -> None:
        """Every request's status and latency, by route; an error no handler answered is a 500."""

        @app.middleware("http")
        async def record(request: Request, call_next):
            start = time.perf_counter()
            try:
                response = await call_next(request)
            except Exception:
                log.exception("unhandled error on %s", request.url.path)
                response = JSONResponse({"detail": "internal error; see the server log"}, status_code=500)
            route = request.scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.requests_total.labels(endpoint, str(response.status_code)).inc()
            self.latency.labels(endpoint).observe(time.perf_counter() - start)
            return response
