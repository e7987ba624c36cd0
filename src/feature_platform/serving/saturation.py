"""The bound on requests one worker works on at once (FEATURE_SERVER_MAX_IN_FLIGHT).

A worker's event loop takes every request it is handed: past its capacity they wait in
the loop, each one's latency grows with the queue, and the store deadline, not the
server, ends up deciding who is served. With a bound, a request that finds its worker
working on that many others is answered 503 with `Retry-After` at once, while the
admitted ones keep their latency; another pod (or the same one a second later) serves the
retry. A request counts from the moment its body has been read (a slow upload occupies
no slot: the read timeout bounds it) until its response is sent. Health, readiness,
metrics and the OpenAPI document are never counted nor refused.

The count alone is the wrong bound for every request size: sixteen 100-entity requests
queue several milliseconds of work, sixteen one-entity requests a fraction of one. So the
bound in use (`limit`) may be lowered by a bound on the wait itself
(FEATURE_SERVER_MAX_QUEUE_WAIT_MS): the work queued ahead of a new request is estimated
as the requests in flight times the worker's CPU time per request, measured over the
last `WINDOW` requests, and the limit is the count whose work fits in that wait. CPU
time rather than wall time: a request waiting on Redis holds no core, so a slow store
does not lower the limit (which would leave the core idle), and the estimate does not
depend on the load.

503 rather than 429: the server is at capacity, not the caller over a quota of its own;
a 503 is what load balancers and client retry policies treat as "try another instance".
"""

from __future__ import annotations

import time
from typing import ClassVar

import orjson

from feature_platform.errors import HTTPError
from feature_platform.serving import contract, metrics

RETRY_AFTER_S = 1
# What the bound counts and refuses: the endpoints that do work.
COUNTED = {
    path: methods
    for path, methods in contract.ENDPOINTS.items()
    if path not in ("/health", "/ready", "/metrics", "/openapi.json")
}


class InFlight:
    """Requests this worker is working on, against the bound in use (0: no bound)."""

    __slots__ = (
        "_completed",
        "_mark",
        "_refused",
        "bound",
        "count",
        "cpu_per_request_s",
        "limit",
        "max_wait_s",
        "refusals",
    )  # fmt: skip
    # The worker's own (one app per worker process), for the protocol's early refusal.
    worker: ClassVar[InFlight | None] = None
    # The CPU time per request is measured over this many requests, and one window spans
    # at most STALE_S: a longer one is mostly idle time (health checks, scrapes), no sample.
    # Nor is a window with refusals in it: their CPU time would count as the requests',
    # and the limit would fall the more the server is overloaded, leaving its core idle.
    WINDOW = 64
    STALE_S = 5.0
    # The wait bound never lowers the limit below this: one request on the core, one
    # waiting on the store and one arriving keep the core busy (at 2, goodput at twice
    # the capacity fell to 85% on a quiet machine, less on a busy one, where the worker
    # idled: loadtests/bench_saturation.py, docs/feature-server/performance.md).
    MIN_LIMIT = 3

    def __init__(self, bound: int, max_wait_s: float = 0.0) -> None:
        self.bound = bound
        self.max_wait_s = max_wait_s
        self.limit = bound
        self.count = 0
        self.cpu_per_request_s = 0.0
        self._completed = self._refused = 0
        self._mark = (time.monotonic(), time.thread_time(), 0, 0)
        self.refusals = self._refusals()
        metrics.track_in_flight(self)
        InFlight.worker = self

    def _refusals(self) -> dict[bool, bytes]:
        """The whole response, kept alive or closing, for the protocol's early refusal."""
        return {alive: refusal_bytes(at_capacity(self.limit), alive) for alive in (True, False)}

    def full(self) -> bool:
        return self.count >= self.limit > 0

    def admit(self) -> None:
        """Count a request in, or refuse it (a 503 with Retry-After) at the bound."""
        if self.full():
            self.refused()
            raise at_capacity(self.limit)
        self.count += 1

    def refused(self) -> None:
        """A request answered 503 at the bound (here or by the protocol's early refusal)."""
        self._refused += 1
        metrics.observe_shed()

    def done(self) -> None:
        self.count -= 1
        self._completed += 1
        if self.max_wait_s and self._completed - self._mark[2] >= self.WINDOW:
            self._measure()

    def _measure(self) -> None:
        """The CPU time per request over the last window, and the limit it gives."""
        now, cpu = time.monotonic(), time.thread_time()
        since, cpu_before, completed_before, refused_before = self._mark
        self._mark = (now, cpu, self._completed, self._refused)
        if now - since > self.STALE_S or self._refused != refused_before:
            return
        per_request = (cpu - cpu_before) / (self._completed - completed_before)
        # smoothed, so one window of unusual requests moves the limit halfway
        previous = self.cpu_per_request_s or per_request
        self.cpu_per_request_s = (previous + per_request) / 2
        fits = max(self.MIN_LIMIT, int(self.max_wait_s / max(self.cpu_per_request_s, 1e-9)))
        limit = min(self.bound, fits) if self.bound else fits
        if limit != self.limit:
            self.limit = limit
            self.refusals = self._refusals()


def at_capacity(bound: int) -> HTTPError:
    return HTTPError(
        503,
        "service unavailable",
        f"the server is at capacity ({bound} requests in flight per worker); "
        f"retry after {RETRY_AFTER_S}s",
        [(b"retry-after", str(RETRY_AFTER_S).encode())],
    )


def refusal_bytes(refusal: HTTPError, keep_alive: bool) -> bytes:
    """`refusal` as a whole HTTP/1.1 response, as the app would send it."""
    body = orjson.dumps(refusal.body())
    headers = [(b"content-type", b"application/json"), *refusal.headers]
    if not keep_alive:
        headers.append((b"connection", b"close"))
    head = b"".join(b"%s: %s\r\n" % pair for pair in headers)
    return b"HTTP/1.1 503 Service Unavailable\r\n%scontent-length: %d\r\n\r\n%s" % (
        head,
        len(body),
        body,
    )
