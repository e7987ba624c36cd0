"""The feature server under bad input and broken dependencies.

This module's stack has a Redis of its own and reaches Postgres through a proxy, so
the tests can stop, pause and cut them without touching the shared services.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import pytest
import requests
from conftest import SEED, deploy
from faults import PrivateRedis, Proxy, eventually
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

SIZES = generator.Sizes(customers=80, merchants=10, days=4, transactions=500)
LIMITS = {
    "FEATURE_SERVER_MAX_ENTITIES": "50",
    "FEATURE_SERVER_MAX_BODY_BYTES": "20000",
    "FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "0.5",
    "FEATURE_SERVER_REGISTRY_TTL_SECONDS": "1",
}
# Feast's own write endpoints, turned on: still behind the write mode.
FEAST_WRITES = {"FEATURE_SERVER_FEAST_ENDPOINTS": "/materialize,/materialize-incremental"}
GOOD = {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.5]}


@dataclass
class Fragile:
    stack: Stack
    server: FeatureServer
    redis: PrivateRedis
    postgres: Proxy
    tables: dict[str, pd.DataFrame]


@pytest.fixture(scope="module")
def fragile(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fragile]:
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    redis.start()
    postgres = Proxy(5432)
    postgres.up()
    stack = stack_factory(
        "dev", "fault", {"REDIS_PORT": str(redis.port), "POSTGRES_PORT": str(postgres.port)}
    )
    tables = generator.generate(SIZES, seed=SEED, as_of=generator.default_as_of())
    deploy(stack, tables)
    server = stack.server(settings={**WRITABLE, **LIMITS, **FEAST_WRITES})
    yield Fragile(stack, server, redis, postgres, tables)
    if not postgres.is_up:
        postgres.up()
    stack.close()  # while its Redis and the proxy still run
    redis.stop()


def _post(server: FeatureServer, body: object, **kwargs: object) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else None
    json_body = None if data is not None else body
    return requests.post(
        f"{server.url}/get-online-features", data=data, json=json_body, timeout=10, **kwargs
    )


def _service(entities: dict) -> dict:
    return {"feature_service": FEATURE_SERVICE, "entities": entities}


MISTAKES = [
    ("malformed JSON", b'{"feature_service": ', 400, "not valid JSON"),
    ("not an object", b"[1, 2]", 422, "JSON object"),
    ("no features", {"entities": GOOD}, 422, "feature_service"),
    ("unknown service", {"feature_service": "nope_v9", "entities": GOOD}, 404, "nope_v9"),
    ("unknown view", {"features": ["nope:x"], "entities": GOOD}, 404, "nope"),
    ("unknown feature", {"features": ["customer_stats:nope"], "entities": GOOD}, 404, "nope"),
    ("bad reference", {"features": ["customer_stats"], "entities": GOOD}, 404, "view:feature"),
    ("missing join key", _service({"customer_id": [1], "amount": [1.0]}), 400, "merchant_id"),
    ("missing request data", _service({"customer_id": [1], "merchant_id": [1]}), 400, "amount"),
    ("string for Int64", _service({**GOOD, "customer_id": ["1", "2"]}), 400, "customer_id[0]"),
    ("bool for Int64", _service({**GOOD, "merchant_id": [True, 2]}), 400, "merchant_id[0]"),
    ("float for Int64", _service({**GOOD, "customer_id": [1.5, 2]}), 400, "customer_id[0]"),
    ("text amount", _service({**GOOD, "amount": ["ten", 2.0]}), 400, "amount[0]"),
    ("empty columns", _service({"customer_id": [], "merchant_id": [], "amount": []}), 400, "empty"),
    ("unequal lengths", _service({**GOOD, "amount": [1.0]}), 400, "differ in length"),
    ("entities not an object", _service([1, 2]), 400, "entities"),  # type: ignore[arg-type]
    ("too many entities", _service({"customer_id": list(range(51)),
                                    "merchant_id": [1] * 51, "amount": [1.0] * 51}), 413, "50"),
    ("body too large", b"{" + b" " * 30_000 + b"}", 413, "20000"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_client_mistakes_get_4xx_with_a_json_reason(
    fragile: Fragile, case: str, body: object, status: int, fragment: str
) -> None:
    response = _post(fragile.server, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert fragment in payload["detail"] or fragment in payload["error"]
    for leak in ("Traceback", 'File "', "postgresql", "psycopg", "password"):
        assert leak not in response.text


def test_a_good_request_still_works(fragile: Fragile) -> None:
    response = _post(fragile.server, _service(GOOD))
    assert response.status_code == 200
    assert response.json()["metadata"]["feature_names"][:2] == ["customer_id", "merchant_id"]


def test_metrics_resolve_sub_millisecond_latency_and_staleness(fragile: Fragile) -> None:
    assert _post(fragile.server, _service(GOOD)).status_code == 200
    assert (
        _post(fragile.server, {"feature_service": "nope_v9", "entities": GOOD}).status_code == 404
    )
    text = requests.get(f"{fragile.server.url}/metrics", timeout=10).text
    assert (
        'feature_server_request_duration_seconds_bucket{endpoint="/get-online-features",le="0.00025"}'
        in text
    )
    assert 'feature_server_requests_total{endpoint="/get-online-features",status="404"}' in text
    assert "feature_server_entities_per_request_count" in text
    assert "feature_server_online_store_read_seconds_bucket" in text
    ages = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith('feature_server_served_value_age_seconds{feature_view="customer_stats"')
    ]
    assert ages and all(age > 0 for age in ages)


def test_write_endpoints_need_the_token(fragile: Fragile) -> None:
    now = datetime.now(UTC).isoformat()
    body = {
        "push_source_name": "customer_txn_1h_push",
        "to": "online",
        "df": {"customer_id": [77_000_001], "event_timestamp": [now], "created_timestamp": [now],
               "n_txn_1h": [2], "sum_amount_1h": [20.0]},
    }  # fmt: skip
    url = f"{fragile.server.url}/push"
    assert requests.post(url, json=body, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer " + "x" * 32}
    assert requests.post(url, json=body, headers=wrong, timeout=10).status_code == 401
    right = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    assert requests.post(url, json=body, headers=right, timeout=10).status_code == 200
    for path in ("/write-to-online-store", "/materialize", "/materialize-incremental"):
        assert requests.post(fragile.server.url + path, json={}, timeout=10).status_code == 401


def test_read_only_server_refuses_every_write(fragile: Fragile) -> None:
    with fragile.stack.active():
        read_only = FeatureServer(fragile.stack.env, settings=FEAST_WRITES).start()
    try:
        for path in ("/push", "/write-to-online-store", "/materialize", "/materialize-incremental"):
            response = requests.post(read_only.url + path, json={}, timeout=10)
            assert response.status_code == 403, path
            assert response.json()["error"] == "forbidden"
        assert _post(read_only, _service(GOOD)).status_code == 200
    finally:
        read_only.stop()


def test_paused_redis_gets_a_503_within_the_deadline(fragile: Fragile) -> None:
    fragile.redis.pause()
    try:
        # requests' own timeout is 10 s: the server must give up at its 0.5 s deadline.
        response = _post(fragile.server, _service(GOOD))
        assert response.status_code == 503
        assert "did not answer within 0.5s" in response.json()["detail"]
        assert requests.get(f"{fragile.server.url}/health", timeout=10).status_code == 200
    finally:
        fragile.redis.resume()
    eventually(
        lambda: _post(fragile.server, _service(GOOD)).status_code == 200,
        "reads succeed after Redis resumes",
    )


def test_serving_continues_from_the_cached_registry_while_postgres_is_down(
    fragile: Fragile,
) -> None:
    before = _post(fragile.server, _service(GOOD)).json()
    fragile.postgres.down()
    try:
        time.sleep(2.5)  # the registry refresh (every 1 s here) fails meanwhile
        for _ in range(20):
            response = _post(fragile.server, _service(GOOD))
            assert response.status_code == 200
            assert response.json() == before
        assert requests.get(f"{fragile.server.url}/ready", timeout=10).status_code == 200
    finally:
        fragile.postgres.up()


def test_zero_errors_while_materialization_writes_the_views_being_read(
    fragile: Fragile,
) -> None:
    # New snapshot rows for every customer, so the run rewrites what is being read.
    stats = fragile.tables["customer_stats"]
    fresh = stats.drop_duplicates("customer_id").copy()
    fresh["event_timestamp"] = fresh["created_timestamp"] = pd.Timestamp(datetime.now(UTC))
    fragile.stack.write({**fragile.tables, "customer_stats": pd.concat([stats, fresh])})

    statuses: list[int] = []
    stop = threading.Event()
    entities = {"customer_id": list(range(1, 41)), "merchant_id": [1] * 40, "amount": [5.0] * 40}

    def load() -> None:
        deadline = time.monotonic() + 120
        session = requests.Session()
        while not stop.is_set() and len(statuses) < 20_000 and time.monotonic() < deadline:
            response = session.post(f"{fragile.server.url}/get-online-features",
                                    json=_service(entities), timeout=10)  # fmt: skip
            statuses.append(response.status_code)

    reader = threading.Thread(target=load)
    reader.start()
    try:
        time.sleep(0.5)
        before = len(statuses)
        fragile.stack.materialize(datetime.now(UTC))
        during = len(statuses) - before
    finally:
        stop.set()
        reader.join()
    assert during > 10, "the load did not overlap the materialization"
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


def test_readiness_follows_redis_down_and_back(fragile: Fragile) -> None:
    ready = f"{fragile.server.url}/ready"
    health = f"{fragile.server.url}/health"
    assert requests.get(ready, timeout=10).status_code == 200
    fragile.redis.stop()
    try:
        eventually(lambda: requests.get(ready, timeout=10).status_code == 503, "ready 503")
        assert requests.get(health, timeout=10).status_code == 200, "liveness must not follow"
        assert _post(fragile.server, _service(GOOD)).status_code == 503
    finally:
        fragile.redis.start()
    eventually(lambda: requests.get(ready, timeout=10).status_code == 200, "ready 200 again")


def test_metrics_carry_no_counter_the_server_never_moves(fragile: Fragile) -> None:
    """Feast's metrics module registers `feast_*` series that only Feast's own handlers
    drive; here every request is counted as `feature_server_*`, so they would sit at 0."""
    assert _post(fragile.server, _service(GOOD)).status_code == 200
    text = requests.get(f"{fragile.server.url}/metrics", timeout=10).text
    assert 'feature_server_requests_total{endpoint="/get-online-features",status="200"}' in text
    feast_series = [line for line in text.splitlines() if line.startswith("feast_")]
    assert not feast_series, feast_series[:5]
