"""Prometheus metrics, shared across gunicorn workers through PROMETHEUS_MULTIPROC_DIR.

Feast's own latency histogram starts at 5 ms, coarser than a whole request here; these
buckets resolve the sub-millisecond range. Freshness and the Redis server's memory are
not per-worker values: they are read at scrape time (`serving/freshness.py`,
`serving/redis_memory.py`) and reported once per scrape.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from feature_platform.serving import contract
from feature_platform.stores import service_reads

if TYPE_CHECKING:
    from feature_platform.serving.freshness import Freshness
    from feature_platform.serving.redis_memory import RedisMemory
    from feature_platform.serving.saturation import InFlight

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
REGISTRY_REFRESH_FAILURES = Counter(
    "feature_server_registry_refresh_failures_total",
    "Registry refreshes that failed; the server kept serving the registry it had.",
)
SERVED_VECTORS = Counter(
    "feature_server_served_vectors_total",
    "Served vector rows of logged feature services: written, or dropped (queue full, "
    "write failed).",
    ["outcome"],
)
# Saturation (serving/saturation.py): in flight over the bound is what the chart's KEDA
# ScaledObject scales on; the event loop's lag is the time ready work waits for a worker.
IN_FLIGHT = Gauge(
    "feature_server_in_flight_requests",
    "Requests the workers are working on (health, readiness and metrics aside), as each "
    "worker last reported it (at most a second ago, and at every scrape).",
    multiprocess_mode="livesum",
)
MAX_IN_FLIGHT = Gauge(
    "feature_server_max_in_flight_requests",
    "The bound on requests in flight in use (FEATURE_SERVER_MAX_IN_FLIGHT, lowered by "
    "FEATURE_SERVER_MAX_QUEUE_WAIT_MS), summed over the workers (0: no bound).",
    multiprocess_mode="livesum",
)
SHED = Counter(
    "feature_server_shed_requests_total",
    "Requests answered 503 with Retry-After at once: their worker was at its bound.",
)
EVENT_LOOP_LAG_SECONDS = Histogram(
    "feature_server_event_loop_lag_seconds",
    "How late a worker's event loop ran a timer, sampled once a second while requests "
    "arrive: the time a request (or a Redis reply) that is ready waits for its worker.",
    buckets=LATENCY_BUCKETS,
)
# Reads by feature list share one label value: the label set stays the registry's services.
FEATURE_LIST = "_features"
SERVICE_READS = Counter(
    "feature_server_feature_service_reads_total",
    "Online feature requests per feature service (found in the registry); requests by "
    f'feature list count as feature_service="{FEATURE_LIST}".',
    ["feature_service"],
)
REGISTRY_LAST_REFRESH = Gauge(
    "feature_server_registry_last_refresh_success_timestamp_seconds",
    "When the registry was last loaded; the stalest worker's time.",
    multiprocess_mode="livemin",
)

ENDPOINTS = {*contract.ENDPOINTS, *contract.FEAST_WRITE_PATHS}


def endpoint_label(path: str) -> str:
    """Bounded label values: unknown paths share one label."""
    return path if path in ENDPOINTS else "other"


class _HistogramBatch:
    """One histogram child's observations since the last flush: a sum and bucket counts."""

    def __init__(self, child: Histogram) -> None:
        self.child = child
        self.bounds = child._upper_bounds
        self.sum = 0.0
        self.counts = [0] * len(self.bounds)

    def observe(self, amount: float) -> None:
        # the first bucket whose upper bound is >= amount, as Histogram.observe picks
        self.sum += amount
        self.counts[bisect_left(self.bounds, amount)] += 1

    def flush(self) -> None:
        if not any(self.counts):
            return
        # prometheus_client has no public call for many observations at once
        self.child._sum.inc(self.sum)
        for bucket, count in zip(self.child._buckets, self.counts, strict=True):
            if count:
                bucket.inc(count)
        self.sum = 0.0
        self.counts = [0] * len(self.bounds)


class _Pending:
    """This process's observations not yet in Prometheus' values.

    Under gunicorn every value update is a locked write to a shared file, and a read
    made about eight of them. Here a request's updates are additions to local numbers,
    written out at most FLUSH_S later, and before every exposition, so a scrape of this
    worker is exact and one of another worker at most FLUSH_S behind.
    """

    FLUSH_S = 1.0

    def __init__(self) -> None:
        self.latency: dict[str, _HistogramBatch] = {}
        self.requests: dict[tuple[str, int], int] = {}
        self.entities = _HistogramBatch(ENTITIES)
        self.store_read = _HistogramBatch(STORE_READ_SECONDS)
        # per view: the newest event time served at the last request, and when
        self.ages: dict[str, tuple[float, float]] = {}
        self.shed = 0
        self.in_flight: InFlight | None = None
        self.loop_lag = _HistogramBatch(EVENT_LOOP_LAG_SECONDS)
        # reads per service name, or per feature list (a tuple of refs)
        self.readers: dict[str | tuple[str, ...], int] = {}
        # the record's fields (`stores/service_reads.py`) read since it was last written
        self.unrecorded: set[str] = set()
        self.scheduled = False

    def schedule(self) -> None:
        if self.scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop to wait in
            return
        loop.call_later(self.FLUSH_S, self.flush_when_due, time.perf_counter() + self.FLUSH_S)
        self.scheduled = True

    def flush_when_due(self, due: float) -> None:
        """The scheduled flush; how late it runs is the event loop's lag."""
        self.loop_lag.observe(max(0.0, time.perf_counter() - due))
        self.flush()

    def flush(self) -> None:
        self.scheduled = False
        for batch in self.latency.values():
            batch.flush()
        requests, self.requests = self.requests, {}
        for (label, status), count in requests.items():
            REQUESTS.labels(label, str(status)).inc(count)
        self.entities.flush()
        self.store_read.flush()
        ages, self.ages = self.ages, {}
        for view, (event_time, at) in ages.items():
            SERVED_AGE_SECONDS.labels(view).set(at - event_time)
        self.loop_lag.flush()
        if self.shed:
            SHED.inc(self.shed)
            self.shed = 0
        if self.in_flight is not None:
            IN_FLIGHT.set(self.in_flight.count)
            MAX_IN_FLIGHT.set(self.in_flight.limit)
        readers, self.readers = self.readers, {}
        for reader, count in readers.items():
            if isinstance(reader, str):
                SERVICE_READS.labels(reader).inc(count)
                self.unrecorded.update(service_reads.fields([reader], []))
            else:
                SERVICE_READS.labels(FEATURE_LIST).inc(count)
                views = {ref.split(":", 1)[0] for ref in reader}
                self.unrecorded.update(service_reads.fields([], views))


_pending = _Pending()
flush = _pending.flush


def observe(path: str, status: int, seconds: float) -> None:
    label = endpoint_label(path)
    batch = _pending.latency.get(label)
    if batch is None:
        batch = _pending.latency[label] = _HistogramBatch(REQUEST_SECONDS.labels(label))
    batch.observe(seconds)
    key = (label, status)
    _pending.requests[key] = _pending.requests.get(key, 0) + 1
    _pending.schedule()


def observe_shed() -> None:
    _pending.shed += 1


def observe_reader(service: str | None, refs: tuple[str, ...]) -> None:
    """A read by a feature service of the registry, or by a feature list."""
    key = service or refs
    _pending.readers[key] = _pending.readers.get(key, 0) + 1
    _pending.schedule()


def take_readers() -> set[str]:
    """The record's fields read since the last call (`serving/read_record.py`)."""
    flush()
    taken, _pending.unrecorded = _pending.unrecorded, set()
    return taken


def track_in_flight(in_flight: InFlight) -> None:
    """This worker's requests in flight, and the bound in use, are reported at every flush."""
    _pending.in_flight = in_flight
    MAX_IN_FLIGHT.set(in_flight.limit)
    IN_FLIGHT.set(in_flight.count)


def observe_read(n_entities: int, read_seconds: float, newest: dict[str, float]) -> None:
    _pending.entities.observe(n_entities)
    _pending.store_read.observe(read_seconds)
    now = time.time()
    for view, event_time in newest.items():
        _pending.ages[view] = (event_time, now)


class FreshnessCollector(Collector):
    """One scrape's freshness; label values are the registry's online views."""

    def __init__(self, freshness: Freshness) -> None:
        self.freshness = freshness

    def collect(self) -> Iterator[Metric]:
        views, newest = self.freshness.views, dict(self.freshness.newest_event)
        now = time.time()
        ttl = GaugeMetricFamily(
            "feature_platform_feature_view_ttl_seconds",
            "The feature view's ttl in the registry (0: none).",
            labels=["feature_view"],
        )
        materialized = GaugeMetricFamily(
            "feature_platform_materialization_last_success_timestamp_seconds",
            "End of the newest interval materialized successfully, per view, from the "
            "registry (materialize-incremental runs up to the time it starts).",
            labels=["feature_view"],
        )
        for view, info in sorted(views.items()):
            ttl.add_metric([view], info.ttl_s)
            if info.materialized_until is not None:
                materialized.add_metric([view], info.materialized_until)
        yield ttl
        yield materialized
        if self.freshness.online_read_ok is None:
            return  # this online store keeps no record of writes
        yield GaugeMetricFamily(
            "feature_platform_online_freshness_up",
            "1 if this scrape read the newest event times from the online store, else 0.",
            value=1.0 if self.freshness.online_read_ok else 0.0,
        )
        newest_at = GaugeMetricFamily(
            "feature_platform_online_newest_event_timestamp_seconds",
            "Event time of the newest value written online (materialization or push), per view.",
            labels=["feature_view"],
        )
        newest_age = GaugeMetricFamily(
            "feature_platform_online_newest_event_age_seconds",
            "Age at scrape time of the newest value written online, per view.",
            labels=["feature_view"],
        )
        loaded = GaugeMetricFamily(
            "feature_platform_online_loaded",
            "1 if the online store holds the record of a materialization run that found the "
            "view whole, 0 if the registry says the view was materialized and the record "
            "is gone (a flushed or replaced store, until a run rebuilds it).",
            labels=["feature_view"],
        )
        for view, info in sorted(views.items()):
            if info.materialized_until is None or not self.freshness.online_read_ok:
                continue  # never materialized, or the record unread: nothing to say
            loaded.add_metric([view], 1.0 if view in self.freshness.loaded else 0.0)
            # A view materialized with no record of what was written reports the epoch,
            # so its age alerts instead of its series vanishing with the data.
            newest.setdefault(view, 0.0)
        for view, event_time in sorted(newest.items()):
            newest_at.add_metric([view], event_time)
            newest_age.add_metric([view], now - event_time)
        yield newest_at
        yield newest_age
        yield loaded


class RedisMemoryCollector(Collector):
    """One scrape's INFO of each Redis primary; label values are the primaries."""

    def __init__(self, memory: RedisMemory) -> None:
        self.memory = memory

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "feature_platform_redis_info_up",
            "1 if this scrape read INFO from every Redis primary, else 0.",
            value=1.0 if self.memory.read_ok else 0.0,
        )
        used = GaugeMetricFamily(
            "feature_platform_redis_used_memory_bytes",
            "Memory Redis has allocated (INFO used_memory), per primary.",
            labels=["node"],
        )
        limit = GaugeMetricFamily(
            "feature_platform_redis_maxmemory_bytes",
            "Redis maxmemory, per primary (0: no limit).",
            labels=["node"],
        )
        evicted = CounterMetricFamily(
            "feature_platform_redis_evicted_keys",
            "Keys Redis deleted to make room (INFO evicted_keys), per primary; each is an "
            "entity served NOT_FOUND until written again.",
            labels=["node"],
        )
        policy = InfoMetricFamily(
            "feature_platform_redis_maxmemory_policy",
            "Redis maxmemory-policy, per primary; anything but noeviction drops keys when full.",
            labels=["node"],
        )
        for node in sorted(self.memory.nodes, key=lambda n: n.node):
            used.add_metric([node.node], node.used_bytes)
            limit.add_metric([node.node], node.max_bytes)
            evicted.add_metric([node.node], node.evicted_keys)
            policy.add_metric([node.node], {"policy": node.policy})
        yield from (used, limit, evicted, policy)


class _PlatformSeries:
    """The series of `source` but Feast's (`feast_*`, from its metrics module): Feast's
    own handlers drive those, and here every request is counted as `feature_server_*`,
    so they would stay at 0."""

    def __init__(self, source: Any) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        return (family for family in self.source.collect() if not family.name.startswith("feast_"))


def exposition(
    freshness: Freshness | None = None, memory: RedisMemory | None = None
) -> tuple[bytes, str]:
    """All workers' metrics under gunicorn (this process's alone otherwise), and the
    freshness and Redis memory of this scrape once, not per worker."""
    flush()
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry.register(_PlatformSeries(multiprocess.MultiProcessCollector(None)))
    else:
        registry.register(_PlatformSeries(REGISTRY))
    if freshness is not None:
        registry.register(FreshnessCollector(freshness))
    if memory is not None:
        registry.register(RedisMemoryCollector(memory))
    return generate_latest(registry), CONTENT_TYPE_LATEST
