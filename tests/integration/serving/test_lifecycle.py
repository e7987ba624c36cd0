"""The server's lifecycle as hard as its read path: readiness bounded by the store
deadline, the registry refresh through outages, SIGTERM under load, slow clients.

Checked by the order of events (an answer before Redis comes back, refusals only after
the drain began); how long things took is printed, not asserted: timings belong to the
benchmark.

This module's stack has a Redis of its own and reaches Postgres through a proxy, so the
tests can pause and cut them without touching the shared services.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from conftest import SEED, deploy
from faults import PrivateRedis, Proxy, eventually
from stacks import Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=200)
STORE_TIMEOUT_S = 0.5
REGISTRY_TTL_S = 1
READ_TIMEOUT_S = 1.0
DRAIN_S = 2
# Only stops a test whose server never acts; far beyond every setting above.
HANG_GUARD_S = 30
SETTINGS = {
    "FEATURE_SERVER_STORE_TIMEOUT_SECONDS": str(STORE_TIMEOUT_S),
    "FEATURE_SERVER_REGISTRY_TTL_SECONDS": str(REGISTRY_TTL_S),
    "FEATURE_SERVER_REQUEST_READ_TIMEOUT_SECONDS": str(READ_TIMEOUT_S),
    "FEATURE_SERVER_DRAIN_SECONDS": str(DRAIN_S),
}
WORKERS = 2
REQUEST = {
    "feature_service": FEATURE_SERVICE,
    "entities": {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.5]},
}


@dataclass
class Services:
    stack: Stack
    server: FeatureServer
    server_log: Path
    redis: PrivateRedis
    postgres: Proxy


@pytest.fixture(scope="module")
def services(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Services]:
    work_dir = tmp_path_factory.mktemp("lifecycle")
    redis = PrivateRedis(work_dir)
    redis.start()
    postgres = Proxy(5432)
    postgres.up()
    stack = stack_factory(
        "dev", "lifecycle", {"REDIS_PORT": str(redis.port), "POSTGRES_PORT": str(postgres.port)}
    )
    deploy(stack, generator.generate(SIZES, seed=SEED, as_of=generator.default_as_of()))
    server_log = work_dir / "server.log"
    with server_log.open("wb") as log:
        server = stack.server(workers=WORKERS, log=log, settings=SETTINGS)
        _every_worker_started(server_log)
        yield Services(stack, server, server_log, redis, postgres)
        if not postgres.is_up:
            postgres.up()
        stack.close()  # while its Redis and the proxy still run
    redis.stop()


def _every_worker_started(server_log: Path) -> None:
    """Ready means one worker is; a worker still starting when a test cuts Postgres
    cannot load the registry, and gunicorn then stops the whole server."""
    eventually(
        lambda: server_log.read_text().count("Application startup complete") >= WORKERS,
        "every worker started",
        attempts=10 * 90,
    )


def _online(url: str, session: requests.Session | None = None) -> requests.Response:
    post = session.post if session else requests.post
    return post(f"{url}/get-online-features", json=REQUEST, timeout=10)


def test_ready_is_503_at_the_store_deadline_while_redis_hangs(services: Services) -> None:
    ready = f"{services.server.url}/ready"
    assert requests.get(ready, timeout=10).status_code == 200
    services.redis.pause()
    resumed = threading.Event()

    def resume() -> None:
        services.redis.resume()
        resumed.set()

    # Redis stays paused until the server has answered, or for ten deadlines: a server
    # waiting on Redis rather than on its deadline answers only once it is back.
    later = threading.Timer(10 * STORE_TIMEOUT_S, resume)
    later.start()
    try:
        started = time.monotonic()
        response = requests.get(ready, timeout=30)
        answered_while_paused = not resumed.is_set()
        waited_s = time.monotonic() - started
    finally:
        later.cancel()
        later.join()
        if not resumed.is_set():
            resume()
    print(f"/ready with Redis paused: {response.status_code} after {waited_s:.2f}s")
    assert answered_while_paused, "/ready answered only after Redis came back"
    assert response.status_code == 503
    assert response.json()["detail"] == f"online store did not answer within {STORE_TIMEOUT_S}s"
    eventually(lambda: requests.get(ready, timeout=10).status_code == 200, "ready again")


def _metric(url: str, name: str, labels: str = "") -> float | None:
    prefix = f"{name}{{{labels}}} " if labels else f"{name} "
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_registry_changes_reach_the_server_after_a_registry_outage(services: Services) -> None:
    url = services.server.url
    failures = "feature_server_registry_refresh_failures_total"
    failed_before = _metric(url, failures) or 0.0
    services.postgres.down()
    try:
        time.sleep(REGISTRY_TTL_S * 3.5)  # several refreshes fail meanwhile
        assert _online(url).status_code == 200, "serving goes on from the last registry"
    finally:
        services.postgres.up()

    store = services.stack.store()
    view = store.get_feature_view("customer_stats")
    assert view.ttl is not None
    view.ttl += timedelta(days=1)
    store.apply([view])
    changed = f"{view.ttl.total_seconds():.1f}"
    ttl_metric = ("feature_platform_feature_view_ttl_seconds", 'feature_view="customer_stats"')

    def every_worker_has_it() -> bool:
        # fresh connections, so the scrapes spread over both workers
        return all(f"{_metric(url, *ttl_metric):.1f}" == changed for _ in range(8))

    applied = time.time()
    eventually(every_worker_has_it, "the change served by every worker", attempts=10 * 5)
    print(f"registry change served {time.time() - applied:.1f}s after apply")
    assert (_metric(url, failures) or 0.0) > failed_before
    # the stalest worker's last success, as the metric reports it, comes after the apply
    last_success = "feature_server_registry_last_refresh_success_timestamp_seconds"
    eventually(lambda: (_metric(url, last_success) or 0) > applied, "a refresh after the apply")

    log_text = services.server_log.read_text()
    assert "registry refresh failed (OperationalError)" in log_text
    # each reload says when it started and whether the registry changed (bench_refresh.py
    # matches latency to reloads by it)
    assert re.search(r"registry reloaded at [0-9.]+ in [0-9.]+ ms \(changed\)", log_text)
    assert "Traceback" not in log_text
    for line in log_text.splitlines():
        if "registry refresh" in line:
            entry = json.loads(line)  # one JSON object per line
            assert entry["level"] == "WARNING" and "postgresql" not in line


@dataclass
class Outcome:
    sent_at: float
    done_at: float
    result: str  # "ok", "refused" or the failure
    closes: bool = False  # the response said Connection: close


def _refused(exc: requests.ConnectionError) -> bool:
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(getattr(reason, "__cause__", None), ConnectionRefusedError)


def _load(url: str, keep_alive: bool, process: subprocess.Popen[bytes]) -> list[Outcome]:
    """Requests one after another until the server process exits (bounded: 20,000 or 60 s)."""
    outcomes: list[Outcome] = []
    session = requests.Session() if keep_alive else None
    deadline = time.monotonic() + 60
    while process.poll() is None and len(outcomes) < 20_000 and time.monotonic() < deadline:
        sent_at = time.monotonic()
        closes = False
        try:
            response = _online(url, session)
            result = "ok" if response.status_code == 200 else f"status {response.status_code}"
            closes = response.headers.get("connection") == "close"
        except requests.ConnectionError as exc:
            result = "refused" if _refused(exc) else repr(exc)
        except requests.RequestException as exc:
            result = repr(exc)
        outcomes.append(Outcome(sent_at, time.monotonic(), result, closes))
    return outcomes


def _sigterm_under_load(
    stack: Stack, server_log: Path
) -> tuple[list[list[Outcome]], float, requests.Response | None, float]:
    """One server under load from two keep-alive and two fresh-connection clients, sent
    SIGTERM; each client's outcomes, when SIGTERM was sent, and /ready halfway through
    the drain (None if refused) with when it answered."""
    with server_log.open("wb") as log, stack.active():
        server = FeatureServer(stack.env, workers=WORKERS, log=log, settings=SETTINGS).start()
    _every_worker_started(server_log)
    process = server.process
    assert process is not None
    results: list[list[Outcome]] = [[] for _ in range(4)]

    def client(slot: int) -> None:
        results[slot] = _load(server.url, slot % 2 == 0, process)

    threads = [threading.Thread(target=client, args=(slot,)) for slot in range(4)]
    ready: requests.Response | None = None
    try:
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        terminated = time.monotonic()
        process.send_signal(signal.SIGTERM)
        time.sleep(DRAIN_S / 2)
        with contextlib.suppress(requests.ConnectionError):
            ready = requests.get(f"{server.url}/ready", timeout=10)
        ready_at = time.monotonic()
        assert process.wait(timeout=30) == 0
    finally:
        for thread in threads:
            thread.join()
        server.stop()
    return results, terminated, ready, ready_at


SIGTERMS = 3


def test_sigterm_under_load_loses_no_request(services: Services, tmp_path: Path) -> None:
    """Three shutdowns under load, each in this order: SIGTERM; /ready says 503 while
    requests are still answered, each with Connection: close; then connections are
    refused (the listener closed; in Kubernetes the pod left the endpoints when it turned
    not-ready), and stay refused. Lost: any request without a 200 but those refusals.
    How long the drain lasted is printed: its length is a setting, not a result."""
    sent = lost = during_drain = 0
    for round_ in range(SIGTERMS):
        clients, terminated, ready, ready_at = _sigterm_under_load(
            services.stack, tmp_path / f"{round_}.log"
        )
        assert ready is not None, "the listener closed before /ready turned 503"
        assert ready.status_code == 503 and ready.json()["detail"] == "shutting down"
        outcomes = [o for outcomes in clients for o in outcomes]
        refused = [o for o in outcomes if o.result == "refused"]
        closed = min((o.sent_at for o in refused), default=math.inf)
        lost_here = [o for o in outcomes if o.result not in ("ok", "refused")]
        lost_here += [o for o in refused if o.sent_at < ready_at]
        # answered while not ready, before the listener closed: the drain
        drained = [o for o in outcomes if ready_at < o.sent_at < closed]
        sent, lost, during_drain = (
            sent + len(outcomes),
            lost + len(lost_here),
            during_drain + len(drained),
        )
        assert not lost_here, [o.result for o in lost_here][:5]
        assert drained, "nothing was answered between not-ready and the listener closing"
        assert all(o.result == "ok" and o.closes for o in drained), "drain answers close"
        for outcomes in clients:
            results = [o.result for o in outcomes]
            first = results.index("refused") if "refused" in results else len(results)
            assert set(results[first:]) <= {"refused"}, "served again after a refusal"
        print(f"SIGTERM {round_}: first refusal {closed - terminated:.2f}s after it")
    print(f"{SIGTERMS} SIGTERMs: {sent} requests sent, {during_drain} during drains, {lost} lost")


def _half_sent(url_port: int, request: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", url_port), timeout=10)
    sock.sendall(request)
    return sock


def test_half_sent_requests_are_answered_408_and_closed(services: Services) -> None:
    """The server ends requests its clients never finish (the read timeout), while it
    serves others. No client here gives up first: a server without the timeout fails
    only at the hang guard, far past it."""
    port = services.server.port
    half_header = b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le"
    half_body = (
        b"POST /get-online-features HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b'Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{"feature_service": '
    )
    # The body of a request asking for h2c is read outside the HTTP parser: bounded too.
    half_upgrade_body = half_body.replace(
        b"Content-Type", b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nContent-Type"
    )
    started = time.monotonic()
    slow = [_half_sent(port, half_header) for _ in range(150)]
    slow += [_half_sent(port, half_body) for _ in range(50)]
    slow += [_half_sent(port, half_upgrade_body) for _ in range(20)]
    silent = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(20)]
    try:
        # others are served meanwhile, on new connections
        assert all(_online(services.server.url).status_code == 200 for _ in range(10))
        answers = []
        for sock in slow + silent:
            sock.settimeout(HANG_GUARD_S)
            received = b""
            try:
                while chunk := sock.recv(4096):  # until the server closes it
                    received += chunk
            except TimeoutError:
                pytest.fail(f"a half-sent request still open after {HANG_GUARD_S}s")
            answers.append(received)
        closed_s = time.monotonic() - started
    finally:
        for sock in slow + silent:
            sock.close()
    print(f"{len(answers)} half-sent requests closed by the server within {closed_s:.2f}s")
    assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers)
    assert _online(services.server.url).status_code == 200


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_sigterm_to_the_whole_process_group_boots_no_worker(
    services: Services, tmp_path: Path
) -> None:
    """SIGTERM to every process of the server, as a terminal or a supervisor sends it to
    the process group: the workers stop, and the draining master boots none in their place."""
    server_log = tmp_path / "group.log"
    with server_log.open("wb") as log, services.stack.active():
        server = FeatureServer(services.stack.env, workers=WORKERS, log=log, settings=SETTINGS)
        server.start()
    _every_worker_started(server_log)
    process = server.process
    assert process is not None
    workers = _children(process.pid)
    assert len(workers) == WORKERS
    try:
        for pid in (process.pid, *workers):
            os.kill(pid, signal.SIGTERM)
        code = process.wait(timeout=30)
    finally:
        server.stop()
    text = server_log.read_text()
    assert "SIGTERM: not ready" in text
    after = text[text.index("SIGTERM: not ready") :]
    assert "Booting worker" not in after, after[:3000]
    assert code == 0, text[-3000:]
