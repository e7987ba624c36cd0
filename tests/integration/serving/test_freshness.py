"""Freshness an operator can alert on, read from what was written online.

A stack of this module's own (its writes would disturb the shared ones) on a Redis it may
pause, materialized by the command the CronJob runs and served by the platform's server:
the newest event time per view follows materialization and pushes, an older write never
moves it back, the registry's last successful run appears, a scrape answers while Redis
does not, and every metric the chart's alerts and dashboard read is exported.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import SEED
from faults import PrivateRedis, eventually, stack_on_private_redis
from prometheus_client.parser import text_string_to_metric_families
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.stores import freshness
from feature_platform.training import FEATURE_SERVICE

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))
import monitoring  # the chart tier's helpers, on the path set above

SIZES = generator.Sizes(customers=20, merchants=4, days=3, transactions=60)
SETTINGS = {
    **WRITABLE,
    "FEATURE_SERVER_REGISTRY_TTL_SECONDS": "1",
    "FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "0.5",
}
NEWEST = "feature_platform_online_newest_event_timestamp_seconds"
AGE = "feature_platform_online_newest_event_age_seconds"
MATERIALIZED = "feature_platform_materialization_last_success_timestamp_seconds"
TTL = "feature_platform_feature_view_ttl_seconds"
UP = "feature_platform_online_freshness_up"
LOADED = "feature_platform_online_loaded"
VIEWS = {"customer_stats", "merchant_stats", "customer_txn_1h"}
# What the skew check pushes to the Pushgateway (its own tests check that it does).
# Pushed by the quality run: tests/integration/quality/test_quality_command.py checks them
# against what a real Pushgateway receives.
QUALITY_PREFIXES = (
    "feature_platform_quality_",
    "feature_platform_feature_drift",
    "feature_platform_feature_null_share",
    "feature_platform_feature_mean",
)
SKEW_CHECK_METRICS = {
    "feature_platform_skew_check_mismatches",
    "feature_platform_skew_check_rows_compared",
    "feature_platform_skew_check_last_run_timestamp_seconds",
    "feature_platform_skew_check_success",
}


@dataclass
class Fresh:
    stack: Stack
    server: FeatureServer
    redis: PrivateRedis
    tables: dict[str, pd.DataFrame]
    first_end: datetime


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _materialize(stack: Stack, end: datetime) -> None:
    """`feature-platform materialize ENV --end END`: the CronJob's command."""
    with stack.active():
        assert cli.main(["materialize", stack.env, "--end", end.isoformat()]) == 0


@pytest.fixture(scope="module")
def fresh(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Fresh]:
    tables = generator.generate(SIZES, seed=SEED, as_of=generator.default_as_of())
    work = tmp_path_factory.mktemp("redis")
    with stack_on_private_redis(stack_factory, work, "fresh", tables) as (stack, redis):
        first_end = _now()
        _materialize(stack, first_end)
        server = stack.server(settings=SETTINGS)
        yield Fresh(stack, server, redis, tables, first_end)


def _scrape(server: FeatureServer) -> dict[str, dict[str, float]]:
    """Metric sample name -> feature_view label ('' without one) -> value."""
    response = requests.get(f"{server.url}/metrics", timeout=10)
    assert response.status_code == 200
    samples: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[sample.labels.get("feature_view", "")] = (
                sample.value
            )
    return samples


def _push(server: FeatureServer, customer: int, event_time: datetime) -> None:
    server.push(
        "customer_txn_1h_push",
        {
            "customer_id": [customer],
            "event_timestamp": [event_time.isoformat()],
            "created_timestamp": [event_time.isoformat()],
            "n_txn_1h": [3],
            "sum_amount_1h": [30.0],
        },
        token=WRITE_TOKEN,
    )


def test_materialization_moves_the_newest_event_time_and_records_the_run(fresh: Fresh) -> None:
    stats = fresh.tables["customer_stats"]
    window_start = pd.Timestamp(fresh.first_end - timedelta(days=2))
    loaded = stats[stats["event_timestamp"] >= window_start]["event_timestamp"].max()
    before = _scrape(fresh.server)
    # What the first run wrote, not when it ran nor what a request read.
    assert before[NEWEST]["customer_stats"] == pytest.approx(loaded.timestamp())
    assert before[MATERIALIZED]["customer_stats"] == fresh.first_end.timestamp()

    time.sleep(1.1)
    new_at = _now()
    newer = stats.drop_duplicates("customer_id").head(2).copy()
    newer["event_timestamp"] = newer["created_timestamp"] = pd.Timestamp(new_at)
    fresh.stack.write({**fresh.tables, "customer_stats": pd.concat([stats, newer])})
    time.sleep(1.1)
    second_end = _now()
    _materialize(fresh.stack, second_end)

    after = _scrape(fresh.server)
    assert after[NEWEST]["customer_stats"] == new_at.timestamp()
    assert 0 <= after[AGE]["customer_stats"] < (_now() - new_at).total_seconds() + 1
    # No newer merchant rows: that view's record stays.
    assert after[NEWEST]["merchant_stats"] == before[NEWEST]["merchant_stats"]
    # The registry holds the run once the server's cached copy refreshes (every 1 s here).
    eventually(
        lambda: _scrape(fresh.server)[MATERIALIZED]["customer_stats"] == second_end.timestamp(),
        "the second run's end as the last successful materialization",
        attempts=300,
    )


def test_a_push_moves_it_and_an_older_push_does_not_move_it_back(fresh: Fresh) -> None:
    newest = _now()
    _push(fresh.server, 950_000_001, newest)
    assert _scrape(fresh.server)[NEWEST]["customer_txn_1h"] == newest.timestamp()

    # An entity never written before: Feast writes this older row, and it is served...
    older = newest - timedelta(minutes=30)
    _push(fresh.server, 950_000_002, older)
    served = fresh.server.online_features(
        {"customer_id": [950_000_002]}, features=["customer_txn_1h:n_txn_1h"]
    )
    assert served["results"][1]["values"] == [3]
    # ...but the view's newest value is still the newer one.
    assert _scrape(fresh.server)[NEWEST]["customer_txn_1h"] == newest.timestamp()


def test_only_the_registry_views_are_reported(fresh: Fresh) -> None:
    """Label values stay bounded: a record of a view the registry no longer holds (or a
    stray one) is not exported."""
    project = fresh.stack.store().project
    fresh.stack.redis().zadd(freshness.key(project), {"deleted_view": time.time()})
    metrics = _scrape(fresh.server)
    assert set(metrics[NEWEST]) == VIEWS
    assert set(metrics[TTL]) == VIEWS
    assert metrics[TTL]["customer_txn_1h"] == 7200


def test_a_scrape_answers_while_redis_does_not(fresh: Fresh) -> None:
    assert _scrape(fresh.server)[UP][""] == 1
    fresh.redis.pause()
    try:
        # requests gives up after 10 s; the server's own deadline here is 0.5 s.
        metrics = _scrape(fresh.server)
    finally:
        fresh.redis.resume()
    assert metrics[UP][""] == 0
    assert NEWEST not in metrics and AGE not in metrics
    # The registry's part does not need Redis.
    assert set(metrics[MATERIALIZED]) == VIEWS
    eventually(lambda: _scrape(fresh.server)[UP][""] == 1, "freshness read again")
    assert set(_scrape(fresh.server)[NEWEST]) == VIEWS


def test_every_metric_the_alerts_and_dashboard_read_is_exported(fresh: Fresh) -> None:
    entities = {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.0]}
    fresh.server.online_features(entities, feature_service=FEATURE_SERVICE)
    exported = set(_scrape(fresh.server)) | SKEW_CHECK_METRICS | monitoring.KUBE_STATE_METRICS
    exprs = [
        *monitoring.rule_exprs(monitoring.rule_groups()),
        *monitoring.dashboard_exprs(monitoring.dashboard()),
    ]
    read = {name for name in monitoring.all_metric_names(exprs)
            if not name.startswith(QUALITY_PREFIXES)}  # fmt: skip
    assert read - exported == set()
    assert {NEWEST, AGE, MATERIALIZED, TTL, UP} <= exported


def test_a_flushed_store_is_reported_lost_until_a_run_rebuilds_it(fresh: Fresh) -> None:
    """The load record goes with the data and a push does not bring it back; the views'
    freshness series stay, at the epoch, instead of vanishing."""
    assert _scrape(fresh.server)[LOADED] == dict.fromkeys(VIEWS, 1)
    flushed = time.monotonic()
    fresh.stack.redis().flushdb()
    metrics = _scrape(fresh.server)
    print(f"loss seen by the first scrape, {time.monotonic() - flushed:.3f} s after FLUSHDB")
    assert metrics[LOADED] == dict.fromkeys(VIEWS, 0)
    assert metrics[NEWEST] == dict.fromkeys(VIEWS, 0)
    assert all(age > 50 * 365 * 86400 for age in metrics[AGE].values())

    pushed_at = _now()
    _push(fresh.server, 950_000_003, pushed_at)
    metrics = _scrape(fresh.server)
    assert metrics[NEWEST]["customer_txn_1h"] == pushed_at.timestamp()
    assert metrics[LOADED]["customer_txn_1h"] == 0, "a push is not a load"

    _materialize(fresh.stack, _now())  # finds the loss and rebuilds
    metrics = _scrape(fresh.server)
    assert metrics[LOADED] == dict.fromkeys(VIEWS, 1)
    assert all(metrics[NEWEST][view] > 0 for view in VIEWS)


def test_the_sqlite_store_reports_the_registry_part_only(server_local: FeatureServer) -> None:
    """The embedded store keeps no record of writes: ttl and materialization only."""
    metrics = _scrape(server_local)
    assert set(metrics[TTL]) == VIEWS
    assert set(metrics[MATERIALIZED]) == VIEWS
    assert not {NEWEST, AGE, UP, LOADED} & set(metrics)
