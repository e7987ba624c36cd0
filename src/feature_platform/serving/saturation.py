"""The bound on requests one worker works on at once (FEATURE_SERVER_MAX_IN_FLIGHT).

A worker's event loop takes every request it is handed: past its capacity they wait in
the loop, each one's latency grows with the queue, and the store deadline, not the
server, ends up deciding who is served. With a bound, a request that finds its worker
working on that many others is answered 503 with `Retry-After` at once, while the
admitted ones keep their latency; another pod (or the same one a second later) serves the
retry. A request counts from the moment its body has been read (a slow upload occupies
no slot: the read timeout bounds it) until its response is sent. Health, readiness,
metrics and the OpenAPI document are never counted nor refused.

503 rather than 429: the server is at capacity, not the caller over a quota of its own;
a 503 is what load balancers and client retry policies treat as "try another instance".
"""

from __future__ import annotations

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
    """Requests this worker is working on, against its bound (0: no bound)."""

    __slots__ = ("bound", "count", "refusals")
    # The worker's own (one app per worker process), for the protocol's early refusal.
    worker: ClassVar[InFlight | None] = None

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.count = 0
        # the whole response, kept alive or closing, for the protocol's early refusal
        self.refusals = {alive: refusal_bytes(at_capacity(bound), alive) for alive in (True, False)}
        metrics.track_in_flight(self)
        InFlight.worker = self

    def full(self) -> bool:
        return self.count >= self.bound > 0

    def admit(self) -> None:
        """Count a request in, or refuse it (a 503 with Retry-After) at the bound."""
        if self.full():
            metrics.observe_shed()
            raise at_capacity(self.bound)
        self.count += 1

    def done(self) -> None:
        self.count -= 1


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
