"""`feature-platform materialize` loads what was created since its last run.

The same hand-built snapshots in local and dev. Each test writes rows of its own
customers to both, runs the command (the CronJob's) and checks that the feature server
answers what a training row at that moment holds, and that local and dev agree:

- a late row (event time before the previous run's end, created now) is served after the
  next run; `materialize-incremental` never loads it;
- a restated value (same event time, later creation time) replaces the online one;
- an older event written later never overwrites a newer one;
- a run cut off from Redis midway loses nothing: the next run writes what it missed.

The overlap is 0 here, so only the watermark keeps a killed run's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from compare import feature_types, offline_rows, online_rows
from faults import Proxy
from feast import FeatureStore
from stacks import Stack

from feature_platform.config import environments
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.training import FEATURE_SERVICE, training_set

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)  # the example's 00:00 snapshot
T1 = T0 + timedelta(hours=1)  # the example's 01:00: the first run's end
CUSTOMERS = range(1, 41)
MERCHANT = 1
# Rows per online write, so that a run of a few dozen rows takes several batches.
WRITE_BATCH_ROWS = 5


def _stats(customer: int, event: datetime, created: datetime, avg: float) -> dict[str, Any]:
    return {
        "customer_id": customer,
        "event_timestamp": pd.Timestamp(event),
        "created_timestamp": pd.Timestamp(created),
        "avg_purchase_30d": avg,
        "n_purchases_7d": 3,
        "n_purchases_30d": 12,
        "account_age_days": 100,
        "home_country": "DE",
    }


def _base_tables() -> dict[str, pd.DataFrame]:
    """Every customer: the day before's snapshot and T0's (avg 100 + id), each written
    five minutes after its event time; one merchant; counters for nobody compared."""
    day = timedelta(days=1)
    five = timedelta(minutes=5)
    stats = [_stats(c, T0 - day, T0 - day + five, 50.0 + c) for c in CUSTOMERS]
    stats += [_stats(c, T0, T0 + five, 100.0 + c) for c in CUSTOMERS]
    merchants = {
        "merchant_id": [MERCHANT],
        "event_timestamp": [pd.Timestamp(T0)],
        "created_timestamp": [pd.Timestamp(T0 + five)],
        "avg_rating": [4.5],
        "n_disputes_30d": [1],
        "n_sales_30d": [200],
        "category": ["grocery"],
    }
    counters = {
        "customer_id": [999],
        "event_timestamp": [pd.Timestamp(T0)],
        "created_timestamp": [pd.Timestamp(T0 + five)],
        "n_txn_1h": [2],
        "sum_amount_1h": [30.0],
    }
    return {
        "customer_stats": pd.DataFrame(stats),
        "merchant_stats": pd.DataFrame(merchants),
        "customer_txn_1h": pd.DataFrame(counters),
    }


@dataclass
class Late:
    local: Stack
    dev: Stack
    server: FeatureServer  # dev's
    redis_proxy: Proxy  # dev's materialization reaches Redis through it
    tables: dict[str, pd.DataFrame]
    local_store: FeatureStore
    dev_store: FeatureStore

    def add_stats(self, *rows: dict[str, Any]) -> None:
        """Append customer_stats rows in both stacks' offline stores."""
        stats = pd.concat([self.tables["customer_stats"], pd.DataFrame(rows)], ignore_index=True)
        self.tables["customer_stats"] = stats
        for stack in (self.local, self.dev):
            stack.write(self.tables)

    def materialize(self, end: datetime | None = None) -> None:
        for stack in (self.local, self.dev):
            stack.materialize(end)


def _yaml_with_small_batches(env: str, tmp: Path) -> Path:
    text = environments.feature_store_yaml(env).read_text()
    path = tmp / f"feature_store.{env}.yaml"
    path.write_text(f"{text}\nmaterialization:\n  online_write_batch_size: {WRITE_BATCH_ROWS}\n")
    return path


@pytest.fixture(scope="module")
def late(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Late]:
    tmp = tmp_path_factory.mktemp("late_rows")
    redis_proxy = Proxy(6379)
    redis_proxy.up()
    common = {materialize.OVERLAP_VAR: "0"}
    local = stack_factory(
        "local",
        "latemat",
        {**common, "FEATURE_STORE_YAML": str(_yaml_with_small_batches("local", tmp))},
    )
    dev = stack_factory(
        "dev",
        "latemat",
        {
            **common,
            "FEATURE_STORE_YAML": str(_yaml_with_small_batches("dev", tmp)),
            "REDIS_PORT": str(redis_proxy.port),
        },
    )
    tables = _base_tables()
    for stack in (local, dev):
        stack.write(tables)
        stack.feast("apply")
    # The server reads Redis directly: only the materialization is cut off.
    server = dev.server(settings={"REDIS_PORT": "6379"})
    with ExitStack() as stores:
        opened = []
        for stack in (local, dev):
            with stack.active():
                opened.append(stores.enter_context(view_rows.job_store(stack.env)))
        late = Late(local, dev, server, redis_proxy, tables, *opened)
        late.materialize(T1)
        yield late
    if not redis_proxy.is_up:
        redis_proxy.up()


def _entities(customers: list[int]) -> dict[str, list[Any]]:
    return {"customer_id": customers, "merchant_id": [MERCHANT] * len(customers),
            "amount": [50.0] * len(customers)}  # fmt: skip


def _served(late: Late, customers: list[int]) -> list[dict[str, Any]]:
    response = late.server.online_features(_entities(customers), feature_service=FEATURE_SERVICE)
    return online_rows(response, feature_types(late.dev_store))


def _local_online(late: Late, customers: list[int]) -> list[dict[str, Any]]:
    """The local stack's online vectors, in the server's shape."""
    store = late.local_store
    response = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE),
        entity_rows=[dict(zip(_entities(customers), row, strict=True))
                     for row in zip(*_entities(customers).values(), strict=True)],
    ).to_dict()  # fmt: skip
    types = feature_types(store)
    return [{name: response[name][i] for name in types} for i in range(len(customers))]


def _trained_now(late: Late, customers: list[int]) -> list[dict[str, Any]]:
    labels = pd.DataFrame(_entities(customers)).assign(
        event_timestamp=pd.Timestamp(datetime.now(UTC))
    )
    return offline_rows(training_set(late.dev_store, labels), feature_types(late.dev_store))


def _assert_consistent(late: Late, customers: list[int]) -> list[dict[str, Any]]:
    """The server's vectors equal the training rows at now and the local store's."""
    served = _served(late, customers)
    assert served == _trained_now(late, customers)
    assert _local_online(late, customers) == served
    return served


def _watermark(store: FeatureStore, view: str) -> datetime | None:
    return Watermarks(store.registry, store.project).get(view)


def _avg(rows: list[dict[str, Any]]) -> list[Any]:
    return [row["avg_purchase_30d"] for row in rows]


def test_a_late_row_is_served_after_the_next_run(late: Late) -> None:
    assert _avg(_served(late, [1])) == [101.0], "the first run loads T0's snapshot"
    # Event time before the first run's end, written now.
    late.add_stats(_stats(1, T0 + timedelta(minutes=30), datetime.now(UTC), 777.0))
    late.materialize()
    assert _avg(_assert_consistent(late, [1])) == [777.0]


def test_a_restated_value_replaces_the_online_one(late: Late) -> None:
    assert _avg(_served(late, [2])) == [102.0]
    late.add_stats(_stats(2, T0, datetime.now(UTC), 888.0))
    late.materialize()
    assert _avg(_assert_consistent(late, [2])) == [888.0]


def test_an_older_event_written_later_never_overwrites_a_newer_one(late: Late) -> None:
    late.add_stats(_stats(3, T0 - timedelta(hours=1), datetime.now(UTC), 999.0))
    late.materialize()
    assert _avg(_assert_consistent(late, [3])) == [103.0]


def test_a_run_cut_off_from_redis_midway_loses_nothing(late: Late) -> None:
    customers = list(range(10, 41))
    written_at = datetime.now(UTC)
    late.add_stats(*(_stats(c, T0 + timedelta(minutes=40), written_at, 5000.0 + c)
                     for c in customers))  # fmt: skip
    lines: list[str] = []

    def cut_after_the_first_batch(line: str) -> None:
        lines.append(line)
        if "customer_stats:" in line and "rows written" in line:
            late.redis_proxy.down()

    watermark_before = _watermark(late.dev_store, "customer_stats")
    try:
        with late.dev.active():
            assert materialize.job("dev", None, cut_after_the_first_batch) == 1
    finally:
        if not late.redis_proxy.is_up:
            late.redis_proxy.up()
    assert any("rows written" in line for line in lines), lines
    assert "materialize failed" in lines[-1] and "customer_stats" in lines[-1], lines[-1]
    assert _watermark(late.dev_store, "customer_stats") == watermark_before
    partial = _avg(_served(late, customers))
    assert partial != [5000.0 + c for c in customers], "the run was not cut off midway"

    late.materialize()
    assert _avg(_assert_consistent(late, customers)) == [5000.0 + c for c in customers]
