"""An open-loop HTTP load generator: requests at a fixed rate, latency from schedule.

Each request has a scheduled send time on a fixed-rate timeline; its latency is
measured from that time, not from when a connection was free, so a slow server cannot
hide its queueing (no coordinated omission). Plain asyncio over keep-alive HTTP/1.1
connections: small enough to run in one process pinned to its own core.

Every run is bounded by its request count and by its duration.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import uvloop


@dataclass
class RunResult:
    target_rps: float
    duration_s: float
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    # from the first scheduled send to the last answer (longer than duration_s when the
    # server, or this generator, fell behind)
    elapsed_s: float = 0.0
    # how late each request left its scheduled time: waiting for a free connection, or
    # for this generator's own core
    send_delays_s: list[float] = field(default_factory=list)

    @property
    def sent(self) -> int:
        return len(self.latencies_s) + self.errors

    @property
    def achieved_rps(self) -> float:
        return len(self.latencies_s) / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_s:
            return float("inf")
        ordered = sorted(self.latencies_s)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]


def _request_bytes(host: str, port: int, path: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value.strip())
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _connection(
    host: str, port: int, request: bytes, queue: asyncio.Queue[float | None], result: RunResult
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (scheduled := await queue.get()) is not None:
            try:
                result.send_delays_s.append(time.perf_counter() - scheduled)
                writer.write(request)
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                result.errors += 1
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                continue
            result.statuses[status] = result.statuses.get(status, 0) + 1
            if status == 200:
                result.latencies_s.append(time.perf_counter() - scheduled)
            else:
                result.errors += 1
    finally:
        writer.close()


async def _run(
    host: str, port: int, path: str, body: bytes, rps: float, duration_s: float,
    connections: int, max_requests: int,
) -> RunResult:  # fmt: skip
    request = _request_bytes(host, port, path, body)
    result = RunResult(rps, duration_s)
    queue: asyncio.Queue[float | None] = asyncio.Queue()
    workers = [
        asyncio.create_task(_connection(host, port, request, queue, result))
        for _ in range(connections)
    ]
    total = min(max_requests, int(rps * duration_s))
    start = time.perf_counter() + 0.05
    for i in range(total):
        scheduled = start + i / rps
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(scheduled)
    for _ in workers:
        queue.put_nowait(None)
    try:
        async with asyncio.timeout(duration_s + 30):
            await asyncio.gather(*workers)
    except TimeoutError:
        for worker in workers:
            worker.cancel()
        result.errors += total - result.sent
    result.elapsed_s = time.perf_counter() - start
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
