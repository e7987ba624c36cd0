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

from feature_platform.errors import HTTPError
from feature_platform.serving import metrics

RETRY_AFTER_S = 1


class InFlight:
    """Requests this worker is working on, against its bound (0: no bound)."""

    __slots__ = ("bound", "count")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.count = 0
        metrics.track_in_flight(self)

    def admit(self) -> None:
        """Count a request in, or refuse it (a 503 with Retry-After) at the bound."""
        if self.count >= self.bound > 0:
            metrics.observe_shed()
            raise HTTPError(
                503,
                "service unavailable",
                f"the server is at capacity ({self.bound} requests in flight per worker); "
                f"retry after {RETRY_AFTER_S}s",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
        self.count += 1

    def done(self) -> None:
        self.count -= 1
