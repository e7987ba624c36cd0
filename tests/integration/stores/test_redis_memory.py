"""A Redis that never drops feature values silently, on a private redis-server with
`--maxmemory 2mb`.

Under `noeviction` a full Redis refuses writes: a push is a 503 once its offline write is
done, and a materialization run fails without moving its watermark, so the next run loads
the rows again. Any other policy is refused by the feature server at start and by the
materialization job, unless REDIS_ALLOW_EVICTION=true. The server's `/metrics` reports
used and maximum memory, evicted keys and the policy, read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import redis
import requests
from compare import served_values
from conftest import SEED
from faults import PrivateRedis, stack_on_private_redis
from prometheus_client.parser import text_string_to_metric_families
from stacks import WRITABLE, WRITE_TOKEN, Stack, patched_environ

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.errors import EXIT_CONFIG_ERROR, EXIT_FAILED
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.offline import tables as offline_tables

MAXMEMORY = 2 * 1024 * 1024
SIZES = generator.Sizes(customers=20, merchants=4, days=3, transactions=60)
SETTINGS = {**WRITABLE, "FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "0.5"}
USED = "feature_platform_redis_used_memory_bytes"
MAX = "feature_platform_redis_maxmemory_bytes"
EVICTED = "feature_platform_redis_evicted_keys_total"
POLICY = "feature_platform_redis_maxmemory_policy_info"
UP = "feature_platform_redis_info_up"
LEAKS = ("Traceback", "EVALSHA", "password")


@dataclass
class Small:
    stack: Stack
    server: FeatureServer
    redis: PrivateRedis
    log: Path
    tables: dict[str, pd.DataFrame]

    @property
    def node(self) -> str:
        return f"127.0.0.1:{self.redis.port}"

    def admin(self) -> redis.Redis:
        """db 0 of the private Redis: the stack's data lives in another db."""
        return redis.Redis(port=self.redis.port, socket_timeout=5)

    def push(self, customer: int, count: int, to: str = "online_and_offline") -> requests.Response:
        now = datetime.now(UTC).isoformat()
        rows = {"customer_id": [customer], "event_timestamp": [now], "n_txn_1h": [count],
                "sum_amount_1h": [count * 1.5]}  # fmt: skip
        return requests.post(
            f"{self.server.url}/push",
            json={"push_source_name": "customer_txn_1h_push", "df": rows, "to": to},
            headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
            timeout=10,
        )

    def served(self, view: str, feature: str, customers: list[int]) -> list[Any]:
        """The feature's value per customer, None where not found."""
        return served_values(self.server, f"{view}:{feature}", customers)

    def watermark(self, view: str) -> datetime | None:
        store = self.stack.store()
        return Watermarks(store.registry, store.project).get(view)

    def materialize(self, *args: str) -> int:
        with self.stack.active():
            return cli.main(["materialize", self.stack.env, *args])


@pytest.fixture(scope="module")
def small(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Small]:
    tables = generator.generate(SIZES, seed=SEED, as_of=generator.default_as_of())
    work = tmp_path_factory.mktemp("redis_memory")
    limits = ("--maxmemory", str(MAXMEMORY), "--maxmemory-policy", "noeviction")
    with stack_on_private_redis(stack_factory, work, "memory", tables, *limits) as (stack, redis):
        stack.materialize()  # noeviction passes the check
        log = work / "server.log"
        with log.open("wb") as out:
            server = stack.server(settings=SETTINGS, log=out)
        yield Small(stack, server, redis, log, tables)


def _scrape(server: FeatureServer) -> dict[str, dict[tuple[str, ...], float]]:
    """Sample name -> its label values (node, then policy) -> value."""
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[tuple[str, ...], float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sample.labels[k] for k in ("node", "policy") if k in sample.labels)
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


@contextmanager
def _full(client: redis.Redis) -> Iterator[None]:
    """Redis at its limit under noeviction, reads going on. Junk is written until Redis
    refuses a write; then maxmemory goes just below what is in use, since Redis counts a
    command's own buffers and a small write could otherwise still fit."""
    written = 0
    try:
        while written < 10_000:
            client.set(f"junk:{written}", b"x" * 4096)
            written += 1
    except redis.exceptions.OutOfMemoryError:
        pass
    assert 0 < written < 10_000, "Redis never refused a write"
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used - 64 * 1024)
    try:
        yield
    finally:
        client.config_set("maxmemory", MAXMEMORY)
        client.delete(*(f"junk:{i}" for i in range(written)))


@contextmanager
def _policy(client: redis.Redis, policy: str) -> Iterator[None]:
    client.config_set("maxmemory-policy", policy)
    try:
        yield
    finally:
        client.config_set("maxmemory-policy", "noeviction")


def test_the_metrics_report_the_memory_the_limit_and_the_policy(small: Small) -> None:
    metrics = _scrape(small.server)
    node = (small.node,)
    assert metrics[UP][()] == 1
    assert metrics[MAX] == {node: MAXMEMORY}
    # The data set is small: an empty Redis takes about 0.9 MB.
    assert 500_000 < metrics[USED][node] < MAXMEMORY
    assert metrics[EVICTED] == {node: 0}
    assert metrics[POLICY] == {(small.node, "noeviction"): 1}


def test_a_push_redis_refuses_for_memory_is_a_503_after_the_offline_write(small: Small) -> None:
    customer = 970_000_001
    with _full(small.admin()):
        response = small.push(customer, 7)
        assert response.status_code == 503, response.text
        assert response.json() == {
            "error": "service unavailable",
            "detail": "online store: OutOfMemoryError; the rows were written offline, "
            "a retry writes them again",
        }
        # Reads go on while Redis is full; the value is not there.
        assert small.served("customer_txn_1h", "n_txn_1h", [customer]) == [None]
        metrics = _scrape(small.server)
        assert metrics[USED][(small.node,)] > metrics[MAX][(small.node,)]
    offline = offline_tables.read(small.stack.settings(), "customer_txn_1h")
    assert offline[offline["customer_id"] == customer]["n_txn_1h"].tolist() == [7]
    logged = small.log.read_text()
    assert "OutOfMemoryError" in logged
    for leak in (*LEAKS, str(customer)):
        assert leak not in response.text + logged

    # Room again: the retry the 503 asks for is served.
    assert small.push(customer, 7, to="online").status_code == 200
    assert small.served("customer_txn_1h", "n_txn_1h", [customer]) == [7]


def test_a_run_redis_refuses_for_memory_moves_no_watermark(
    small: Small, capsys: pytest.CaptureFixture[str]
) -> None:
    customers = [970_000_011, 970_000_012]
    now = pd.Timestamp(datetime.now(UTC))
    stats = small.tables["customer_stats"]
    new = stats.head(len(customers)).copy()
    new["customer_id"] = customers
    new["event_timestamp"] = new["created_timestamp"] = now - timedelta(seconds=1)
    small.stack.write({**small.tables, "customer_stats": pd.concat([stats, new])})
    before = small.watermark("customer_stats")
    assert before is not None

    capsys.readouterr()
    with _full(small.admin()):
        assert small.materialize() == EXIT_FAILED
    failure = capsys.readouterr().err.strip().splitlines()[-1]
    assert "OutOfMemoryError: command not allowed when used memory" in failure
    assert "watermark and interval stay" in failure
    for leak in LEAKS:
        assert leak not in failure
    assert small.watermark("customer_stats") == before
    assert small.served("customer_stats", "account_age_days", customers) == [None, None]

    # The next run, with room, loads the rows the failed one did not.
    assert small.materialize() == 0
    assert small.watermark("customer_stats") > before  # type: ignore[operator]
    expected = new["account_age_days"].tolist()
    assert small.served("customer_stats", "account_age_days", customers) == expected


def test_an_evicting_policy_is_refused_unless_allowed(
    small: Small, capsys: pytest.CaptureFixture[str]
) -> None:
    refusal = (
        f"config error: Redis may drop feature values when full ({small.node} has "
        "maxmemory-policy allkeys-lru): set maxmemory-policy noeviction, or "
        "REDIS_ALLOW_EVICTION=true to accept values served as NOT_FOUND"
    )
    before = small.watermark("customer_stats")
    capsys.readouterr()
    with _policy(small.admin(), "allkeys-lru"):
        assert small.materialize() == EXIT_CONFIG_ERROR
        assert capsys.readouterr().err.strip() == refusal
        assert small.watermark("customer_stats") == before

        log = small.log.with_name("refused.log")
        with log.open("wb") as out:
            refused = FeatureServer(small.stack.env, settings=SETTINGS, log=out)
            with small.stack.active(), pytest.raises(RuntimeError, match="exited with code 2"):
                refused.launch().wait_ready()
        assert log.read_text().strip().splitlines()[-1] == refusal

        with patched_environ({"REDIS_ALLOW_EVICTION": "true"}):
            assert small.materialize() == 0
        warning = f"warning: {small.node} has maxmemory-policy allkeys-lru: Redis drops "
        assert capsys.readouterr().err.startswith(warning)


def test_evictions_show_at_scrape_time(small: Small) -> None:
    """volatile-lru evicts only keys with an expiry: the junk's, never the stack's."""
    client = small.admin()

    def lasting() -> int:
        """Keys without an expiry, which volatile-lru never evicts: the stack's data."""
        return sum(1 for key in client.scan_iter() if client.ttl(key) == -1)

    before = lasting()
    with _policy(client, "volatile-lru"):
        for i in range(1_000):  # 4 MB, twice the limit
            client.set(f"expiring:{i}", b"x" * 4096, ex=600)
        metrics = _scrape(small.server)
        junk_left = sum(1 for _ in client.scan_iter("expiring:*"))
    client.delete(*(f"expiring:{i}" for i in range(1_000)))
    assert metrics[POLICY] == {(small.node, "volatile-lru"): 1}
    assert metrics[EVICTED][(small.node,)] >= 1_000 - junk_left > 0
    # used_memory may pass maxmemory by a command's buffers until the next eviction
    assert metrics[USED][(small.node,)] > 0
    assert lasting() == before


def test_a_scrape_answers_while_redis_does_not(small: Small) -> None:
    small.redis.pause()
    try:
        metrics = _scrape(small.server)
    finally:
        small.redis.resume()
    assert metrics[UP][()] == 0
    assert not {USED, MAX, EVICTED, POLICY} & set(metrics)
    assert _scrape(small.server)[UP][()] == 1
