"""Prometheus metrics, shared across gunicorn workers through PROMETHEUS_MULTIPROC_DIR.

Feast's own latency histogram starts at 5 ms, coarser than a whole request here; these
buckets resolve the sub-millisecond range.
"""

from __future__ import annotations

import os
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (
    0.00025, 0.0005, 0.00075, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip

REQUEST_SECONDS = Histogram(
    "feature_server_request_duration_seconds",
    "Time from request received to response sent.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
REQUESTS = Counter("feature_server_requests_total", "Requests answered.", ["endpoint", "status"])
ENTITIES = Histogram(
    "feature_server_entities_per_request",
    "Entity rows per /get-online-features request.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
)
STORE_READ_SECONDS = Histogram(
    "feature_server_online_store_read_seconds",
    "Time waiting for the online store per request.",
    buckets=LATENCY_BUCKETS,
)
SERVED_AGE_SECONDS = Gauge(
    "feature_server_served_value_age_seconds",
    "Age of the newest value served from each feature view, at the last request.",
    ["feature_view"],
    multiprocess_mode="livemostrecent",
)

ENDPOINTS = {
    "/get-online-features", "/push", "/write-to-online-store", "/materialize",
    "/materialize-incremental", "/health", "/ready", "/metrics",
}  # fmt: skip


def endpoint_label(path: str) -> str:
    """Bounded label values: unknown paths share one label."""
    return path if path in ENDPOINTS else "other"


def observe(path: str, status: int, seconds: float) -> None:
    label = endpoint_label(path)
    REQUEST_SECONDS.labels(label).observe(seconds)
    REQUESTS.labels(label, str(status)).inc()


def observe_read(n_entities: int, read_seconds: float, newest: dict[str, float]) -> None:
    ENTITIES.observe(n_entities)
    STORE_READ_SECONDS.observe(read_seconds)
    now = time.time()
    for view, event_time in newest.items():
        SERVED_AGE_SECONDS.labels(view).set(now - event_time)


def exposition() -> tuple[bytes, str]:
    """All workers' metrics under gunicorn; this process's alone otherwise."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
