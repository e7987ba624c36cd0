"""The bound on requests in flight, against a real server process (one worker).

Requests are made slow by the store: the stack's own Redis is paused (SIGSTOP), so every
read the worker admitted waits on it, and the store deadline is set far beyond anything
here, as a hang guard only. Then more requests than the bound arrive at once. Nothing
here is timed: what is checked is who was answered while the store was still paused
(only the shed requests can be), with what, and what the counters say afterwards.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from conftest import SEED, deploy
from faults import PrivateRedis
from prometheus_client.parser import text_string_to_metric_families
from stacks import Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))
import monitoring  # the chart tier's helpers, on the path set above
import rendering

SIZES = generator.Sizes(customers=20, merchants=4, days=3, transactions=60)
BOUND = 3
EXCESS = 5
# Only stops a test whose server never answers; no request here waits on it.
HANG_GUARD_S = 60
SETTINGS = {"FEATURE_SERVER_STORE_TIMEOUT_SECONDS": str(HANG_GUARD_S)}
REQUEST = {
    "feature_service": FEATURE_SERVICE,
    "entities": {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.5]},
}
SHED = "feature_server_shed_requests_total"
IN_FLIGHT = "feature_server_in_flight_requests"
MAX_IN_FLIGHT = "feature_server_max_in_flight_requests"


@dataclass
class Stalled:
    stack: Stack
    redis: PrivateRedis


@pytest.fixture(scope="module")
def stalled(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stalled]:
    redis = PrivateRedis(tmp_path_factory.mktemp("saturation"))
    redis.start()
    stack = stack_factory("dev", "saturation", {"REDIS_PORT": str(redis.port)})
    try:
        deploy(stack, generator.generate(SIZES, seed=SEED, as_of=generator.default_as_of()))
        yield Stalled(stack, redis)
    finally:
        stack.close()  # its servers, while their Redis still runs
        redis.stop()


@dataclass
class Answers:
    """Responses in the order they arrived; `arrived` is notified at each."""

    responses: list[requests.Response] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, count: int) -> None:
        with self.arrived:
            if not self.arrived.wait_for(lambda: len(self.responses) >= count, HANG_GUARD_S):
                pytest.fail(f"{len(self.responses)} of {count} answers within the hang guard")


def _read(url: str, answers: Answers) -> None:
    response = requests.post(f"{url}/get-online-features", json=REQUEST, timeout=2 * HANG_GUARD_S)
    with answers.arrived:
        answers.responses.append(response)
        answers.arrived.notify_all()


def _samples(server: FeatureServer) -> dict[str, float]:
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if not sample.labels
    }


@dataclass
class Burst:
    early: list[requests.Response]  # answered while the store was paused
    late: list[requests.Response]  # answered once it resumed
    probes: dict[str, int]  # status of /health, /ready and /metrics, asked meanwhile


def _burst_while_stalled(
    stalled: Stalled,
    server: FeatureServer,
    expect_early: int,
    meanwhile: Callable[[], None] = lambda: None,
) -> Burst:
    """BOUND + EXCESS reads at once with Redis paused; once `expect_early` of them are
    answered, the probes are asked, /health last, then `meanwhile`, then Redis resumes."""
    answers = Answers()
    probes: dict[str, int] = {}

    def probe(path: str) -> None:
        probes[path] = requests.get(f"{server.url}{path}", timeout=2 * HANG_GUARD_S).status_code

    reads = [
        threading.Thread(target=_read, args=(server.url, answers)) for _ in range(BOUND + EXCESS)
    ]
    # /ready and /metrics ask Redis themselves: answered once it resumes, and never shed
    waiting = [threading.Thread(target=probe, args=(path,)) for path in ("/ready", "/metrics")]
    stalled.redis.pause()
    try:
        for thread in reads:
            thread.start()
        answers.wait_for(expect_early)
        for thread in waiting:
            thread.start()
        probe("/health")
        meanwhile()
        with answers.arrived:
            early = list(answers.responses)
    finally:
        stalled.redis.resume()
    for thread in reads + waiting:
        thread.join(timeout=2 * HANG_GUARD_S)
    return Burst(early, answers.responses[len(early) :], probes)


def test_past_the_bound_requests_are_shed_at_once_and_the_rest_served(stalled: Stalled) -> None:
    server = stalled.stack.server(settings={**SETTINGS, "FEATURE_SERVER_MAX_IN_FLIGHT": str(BOUND)})
    served = server.online_features(REQUEST["entities"], feature_service=FEATURE_SERVICE)
    before = _samples(server)
    assert before[MAX_IN_FLIGHT] == BOUND
    assert before[IN_FLIGHT] == 0

    burst = _burst_while_stalled(stalled, server, EXCESS)
    early, late = burst.early, burst.late

    # While the store was paused: exactly the excess was answered, each with a 503 that
    # says why and when to come back; the probes were answered, none shed.
    assert len(early) == EXCESS
    assert all(r.status_code == 503 for r in early)
    assert all(r.headers["Retry-After"] == "1" for r in early)
    assert all(
        r.json() == {"error": "service unavailable",
                     "detail": "the server is at capacity (3 requests in flight per worker); "
                               "retry after 1s"}
        for r in early
    )  # fmt: skip
    assert burst.probes == {"/health": 200, "/ready": 200, "/metrics": 200}
    # The admitted ones were served once the store answered, with the values it holds.
    assert [r.status_code for r in late] == [200] * BOUND
    assert all(r.json() == served for r in late)

    after = _samples(server)
    assert after[SHED] - before[SHED] == EXCESS
    assert after[IN_FLIGHT] == 0
    assert server.online_features(REQUEST["entities"], feature_service=FEATURE_SERVICE) == served


def _raw_request(version: str = "1.1") -> bytes:
    body = json.dumps(REQUEST).encode()
    return (
        f"POST /get-online-features HTTP/{version}\r\nhost: 127.0.0.1\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode() + body


def _raw_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`count` responses read off `sock`: (status, headers, body)."""
    data, responses = b"", []
    while len(responses) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            status_line, *lines = data[:head_end].decode().split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
            end = head_end + 4 + int(headers["content-length"])
            if len(data) >= end:
                responses.append((int(status_line.split()[1]), headers, data[head_end + 4 : end]))
                data = data[end:]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(responses)} of {count} responses"
        data += chunk
    return responses


def test_a_refused_request_leaves_its_connection_to_the_next(stalled: Stalled) -> None:
    """Refused as its headers end, a request still has its body read and its 503 sent in
    order: two pipelined refusals, then the same connection served once there is room.
    An HTTP/1.0 request's refusal closes its connection, as its response would."""
    server = stalled.stack.server(settings={**SETTINGS, "FEATURE_SERVER_MAX_IN_FLIGHT": str(BOUND)})
    served = server.online_features(REQUEST["entities"], feature_service=FEATURE_SERVICE)
    kept = socket.create_connection(("127.0.0.1", server.port), timeout=2 * HANG_GUARD_S)
    refused: list[tuple[int, dict[str, str], bytes]] = []

    def while_full() -> None:
        kept.sendall(_raw_request() * 2)
        refused.extend(_raw_responses(kept, 2))
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as old:
            old.sendall(_raw_request("1.0"))
            refused.extend(_raw_responses(old, 1))
            assert old.recv(1) == b"", "the HTTP/1.0 connection is closed"

    with kept:
        burst = _burst_while_stalled(stalled, server, EXCESS, while_full)
        assert [status for status, _, _ in refused] == [503, 503, 503]
        assert [h.get("connection") for _, h, _ in refused] == [None, None, "close"]
        assert all(h["retry-after"] == "1" for _, h, _ in refused)
        assert all(json.loads(body) == burst.early[0].json() for _, _, body in refused)
        kept.sendall(_raw_request())
        [(status, _, body)] = _raw_responses(kept, 1)
    assert status == 200
    assert json.loads(body) == served


def test_without_a_bound_every_request_waits_for_the_store(stalled: Stalled) -> None:
    """The same burst as before the bound existed: none is answered until the store is,
    and then all are (the control of the test above: there, the bound made the 503s)."""
    server = stalled.stack.server(settings={**SETTINGS, "FEATURE_SERVER_MAX_IN_FLIGHT": "0"})
    served = server.online_features(REQUEST["entities"], feature_service=FEATURE_SERVICE)
    burst = _burst_while_stalled(stalled, server, 0)
    assert burst.probes == {"/health": 200, "/ready": 200, "/metrics": 200}
    assert burst.early == []
    assert [r.status_code for r in burst.late] == [200] * (BOUND + EXCESS)
    assert all(r.json() == served for r in burst.late)
    samples = _samples(server)
    assert samples[SHED] == 0
    assert samples[MAX_IN_FLIGHT] == 0


def test_the_scaled_object_reads_series_the_server_exports(stalled: Stalled) -> None:
    server = stalled.stack.server(settings={"FEATURE_SERVER_MAX_IN_FLIGHT": str(BOUND)})
    scaled = rendering.one(rendering.rendered_scenario("ci/keda-values"), "ScaledObject")
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    read = monitoring.metric_names(trigger["metadata"]["query"])
    assert read
    assert read <= set(_samples(server))
