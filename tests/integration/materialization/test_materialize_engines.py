"""`feature-platform materialize` on Feast's Ray engine writes what the in-process engine
writes: the same Redis bytes (DUMP of every key) for the same rows, run after run, with
the watermark and the late-row rules kept.

Two dev stacks get the same tables. One materializes in process, the other with
`MATERIALIZE_ENGINE` selecting `ray.engine` (local Ray, two writers, batches of a few
rows so that several workers write). Ray starts in this process for each run and stops
with it (`stacks.patched_environ`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from stacks import CLAIM_KEY, Stack, patched_environ

from feature_platform.config import environments, feast_commands
from feature_platform.config.guard import ConfigError
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.stores import freshness

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=3)
T1 = T0 + timedelta(hours=1)
CUSTOMERS = range(1, 31)
RAY_ENGINE = json.dumps({"type": "ray.engine", "write_concurrency": 2})
AVG_FIELD = _mmh3("customer_stats:avg_purchase_30d")
PROJECT = b"fraud_detection"


def _stats(customer: int, event: datetime, created: datetime, avg: float) -> dict[str, Any]:
    return {"customer_id": customer, "event_timestamp": pd.Timestamp(event),
            "created_timestamp": pd.Timestamp(created), "avg_purchase_30d": avg,
            "n_purchases_7d": 3, "n_purchases_30d": 12, "account_age_days": 100,
            "home_country": "DE" if customer % 2 else "FR"}  # fmt: skip


def _tables(extra: list[dict[str, Any]]) -> dict[str, pd.DataFrame]:
    five = timedelta(minutes=5)
    stats = [_stats(c, T0, T0 + five, 100.0 + c) for c in CUSTOMERS] + extra
    times = {"event_timestamp": [pd.Timestamp(T0)], "created_timestamp": [pd.Timestamp(T0)]}
    merchants = {"merchant_id": [1], **times, "avg_rating": [4.5], "n_disputes_30d": [1],
                 "n_sales_30d": [200], "category": ["grocery"]}  # fmt: skip
    counters = {"customer_id": [999], **times, "n_txn_1h": [2], "sum_amount_1h": [30.0]}
    return {
        "customer_stats": pd.DataFrame(stats),
        "merchant_stats": pd.DataFrame(merchants),
        "customer_txn_1h": pd.DataFrame(counters),
    }


def _small_batches(tmp: Path) -> Path:
    path = tmp / "feature_store.yaml"
    text = environments.feature_store_yaml("dev").read_text()
    path.write_text(f"{text}\nmaterialization:\n  online_write_batch_size: 7\n")
    return path


def _dumps(stack: Stack) -> dict[bytes, bytes]:
    """Every entity hash of the stack's Redis db, serialized by Redis (DUMP)."""
    client = stack.redis()
    own = freshness.KEY_PREFIX.encode()
    keys = [k for k in client.scan_iter(count=1000) if k != CLAIM_KEY.encode() and
            not k.startswith(own)]  # fmt: skip
    return {key: client.dump(key) for key in sorted(keys)}


def _avg(stack: Stack, customer: int) -> float | None:
    """customer_stats' avg_purchase_30d of `customer` as stored in Redis."""
    entity = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=customer)])
    raw = stack.redis().hget(serialize_entity_key(entity, 3) + PROJECT, AVG_FIELD)
    if raw is None:
        return None
    value = Value()
    value.ParseFromString(raw)
    return value.double_val


def _watermark(stack: Stack) -> datetime | None:
    with stack.active(), view_rows.job_store(stack.env) as store:
        return Watermarks(store.registry, store.project).get("customer_stats")


@pytest.fixture(scope="module")
def stacks(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    yaml = _small_batches(tmp_path_factory.mktemp("engines"))
    common = {materialize.OVERLAP_VAR: "0", "FEATURE_STORE_YAML": str(yaml)}
    local = stack_factory("dev", "enginelocal", common)
    ray = stack_factory("dev", "engineray", {**common, "MATERIALIZE_ENGINE": RAY_ENGINE})
    applies = []
    for stack in (local, ray):
        stack.write(_tables([]))
        with stack.active():  # both applies at once: each is a process of its own
            applies.append(feast_commands.start(stack.env, ["apply"]))
    assert [apply.wait(timeout=600) for apply in applies] == [0, 0]
    yield local, ray


def _run_both(stacks: tuple[Stack, Stack], end: datetime) -> None:
    for stack in stacks:
        stack.materialize(end)


def test_ray_engine_writes_the_in_process_bytes(stacks: tuple[Stack, Stack]) -> None:
    local, ray = stacks
    with ray.active(), view_rows.job_store(ray.env) as store:
        assert type(store.config.batch_engine).__name__ == "RayComputeEngineConfig"
    with local.active(), view_rows.job_store(local.env) as store:
        assert store.config.batch_engine.type == "local"

    _run_both(stacks, T1)
    first = _dumps(local)
    assert len(first) == len(CUSTOMERS) + 2  # the customers, the merchant, the counter
    assert _dumps(ray) == first
    watermark = _watermark(local)
    assert watermark is not None and _watermark(ray) == watermark

    # After T1's run: a late row (event before T1, created now), a restatement (same
    # event time, created later) and an older event created later, which must not win.
    created = datetime.now(UTC).replace(microsecond=0)
    extra = [
        _stats(1, T1 - timedelta(minutes=30), created, 1111.0),
        _stats(2, T0, created, 2222.0),
        _stats(3, T0 - timedelta(days=1), created, 3333.0),
    ]
    for stack in stacks:
        stack.write(_tables(extra))
    # An end already past, so that both runs' watermarks are that end, not their clocks.
    _run_both(stacks, created)

    second = _dumps(local)
    assert _dumps(ray) == second
    changed = sorted(key for key in second if second[key] != first[key])
    assert len(changed) == 2, "the late row and the restatement, not the older event"
    for stack in stacks:
        assert [_avg(stack, c) for c in (1, 2, 3)] == [1111.0, 2222.0, 103.0]
    assert _watermark(local) == _watermark(ray) == created

    # A run with nothing new rewrites nothing, on either engine.
    _run_both(stacks, datetime.now(UTC))
    assert _dumps(local) == second
    assert _dumps(ray) == second


@pytest.mark.parametrize("engine", ['{"type": "ray.engine", "no_such_setting": 1}', "spark.engine"])
def test_an_engine_feast_cannot_build_is_a_configuration_error(
    stacks: tuple[Stack, Stack], engine: str
) -> None:
    local, _ = stacks
    bad = {**local.overrides, "MATERIALIZE_ENGINE": engine}
    with patched_environ(bad), pytest.raises(ConfigError, match="MATERIALIZE_ENGINE"):
        materialize.job(local.env, None, lambda _line: None)
