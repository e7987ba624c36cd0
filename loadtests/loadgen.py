"""An open-loop HTTP load generator: requests at a fixed rate, latency from schedule.

Each request has a scheduled send time on a fixed-rate timeline; its latency is
measured from that time, not from when a connection was free, so a slow server cannot
hide its queueing (no coordinated omission). Keep-alive HTTP/1.1 connections, each an
asyncio protocol on uvloop (no stream reader, no task per connection), so that one core
sends well past the rates the benches offer and the generator's own delay stays out of
what it measures; that delay is recorded too (`send_delays_s`), to show it.

Every run is bounded by its request count and by its duration.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import uvloop


@dataclass
class RunResult:
    target_rps: float
    duration_s: float
    # of the 200s, from the scheduled send time
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # from the first scheduled send to the last answer (longer than duration_s when the
    # server, or this generator, fell behind)
    elapsed_s: float = 0.0
    # how late each request left its scheduled time: waiting for a free connection, or
    # for this generator's own core
    send_delays_s: list[float] = field(default_factory=list)
    # of the 200s, from the moment the request was written: what the server and the
    # network took, without the generator's own delay in sending
    from_send_s: list[float] = field(default_factory=list)
    # each 200's scheduled send time (time.perf_counter()), beside its latency in
    # latencies_s; add clock_offset_s for the wall clock (time.time())
    scheduled_s: list[float] = field(default_factory=list)
    clock_offset_s: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.latencies_s) + self.errors

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_s) / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float, samples: list[float] | None = None) -> float:
        """The q-th percentile of `samples` (default: the latencies from schedule)."""
        values = self.latencies_s if samples is None else samples
        if not values:
            return float("inf")
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]


def _request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _response_length(head: bytes) -> int | None:
    """The body's length from a response head; None: chunked (ends with `0\\r\\n\\r\\n`)."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            return None
    return length


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time, its answer parsed as it arrives."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.scheduled = self.sent_at = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's, not asyncio's class
        self.run.connections.add(self)
        self.run.idle.append(self)
        self.run.dispatch()

    def send(self, scheduled: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.scheduled = scheduled
        self.sent_at = time.perf_counter()
        self.run.result.send_delays_s.append(self.sent_at - scheduled)
        self.buffer.clear()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end])
        length = _response_length(head)
        if length is None:
            if not self.buffer.endswith(b"0\r\n\r\n"):
                return
        elif len(self.buffer) < end + 4 + length:
            return
        status = int(head.split(b" ", 2)[1])
        self.busy = False
        self.run.answered(self, status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.lost(self)


class _Run:
    def __init__(self, host: str, port: int, request: bytes, result: RunResult) -> None:
        self.host, self.port, self.request, self.result = host, port, request, result
        self.loop = asyncio.get_running_loop()
        self.idle: deque[_Connection] = deque()
        self.waiting: deque[float] = deque()  # scheduled times with no free connection yet
        self.connections: set[_Connection] = set()
        self.outstanding = 0
        self.done_sending = False
        self.all_answered = self.loop.create_future()

    async def open(self, connections: int) -> None:
        await asyncio.gather(
            *(self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
              for _ in range(connections))
        )  # fmt: skip

    def submit(self, scheduled: float) -> None:
        self.outstanding += 1
        self.waiting.append(scheduled)
        self.dispatch()

    def dispatch(self) -> None:
        while self.waiting and self.idle:
            self.idle.popleft().send(self.waiting.popleft())

    def answered(self, connection: _Connection, status: int) -> None:
        now = time.perf_counter()
        result = self.result
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.latencies_s.append(now - connection.scheduled)
            result.from_send_s.append(now - connection.sent_at)
            result.scheduled_s.append(connection.scheduled)
        else:
            result.errors += 1
        self.idle.append(connection)
        self._finished_one()
        self.dispatch()

    def lost(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if connection in self.idle:
            self.idle.remove(connection)
        if connection.busy:  # its request has no answer: an error, and a new connection
            self.result.errors += 1
            self._finished_one()
        if self.outstanding:
            self.loop.create_task(self.open(1))

    def _finished_one(self) -> None:
        self.outstanding -= 1
        if self.outstanding == 0 and self.done_sending and not self.all_answered.done():
            self.all_answered.set_result(None)

    def close(self) -> None:
        self.outstanding = 0  # no new connection for what is left unanswered
        for connection in list(self.connections):
            connection.busy = False
            if connection.transport is not None:
                connection.transport.close()


async def _run(
    host: str, port: int, path: str, body: bytes, rps: float, duration_s: float,
    connections: int, max_requests: int,
) -> RunResult:  # fmt: skip
    result = RunResult(rps, duration_s, clock_offset_s=time.time() - time.perf_counter())
    run = _Run(host, port, _request_bytes(host, port, path, body), result)
    await run.open(connections)
    total = min(max_requests, int(rps * duration_s))
    start = time.perf_counter() + 0.05
    sent = 0
    while sent < total:
        now = time.perf_counter()
        # every request whose time has come, then sleep to the next one's time
        due = min(total, int((now - start) * rps) + 1)
        while sent < due:
            run.submit(start + sent / rps)
            sent += 1
        if sent < total:
            await asyncio.sleep(max(0.0, start + sent / rps - time.perf_counter()))
    run.done_sending = True
    if run.outstanding == 0:
        run.all_answered.set_result(None)
    try:
        async with asyncio.timeout(duration_s + 30):
            await run.all_answered
    except TimeoutError:
        result.errors += run.outstanding
    result.elapsed_s = time.perf_counter() - start
    run.close()
    return result


def run_fixed_rate(
    url: str, body: bytes, rps: float, duration_s: float = 5.0, connections: int = 64,
    max_requests: int = 100_000,
) -> RunResult:  # fmt: skip
    """POST `body` to `url` at `rps` for `duration_s` (or `max_requests`, if fewer)."""
    without_scheme = url.split("://", 1)[1]
    hostport, _, rest = without_scheme.partition("/")
    host, _, port = hostport.partition(":")
    # uvloop's loop (uvicorn's own dependency) more than doubles the rate one core sends
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(
            _run(
                host, int(port or 80), "/" + rest, body, rps, duration_s, connections, max_requests
            )
        )
