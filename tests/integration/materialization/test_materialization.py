"""`feature-platform materialize` into Redis: repeatable, and exactly what is new."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import pandas as pd
from conftest import SEED
from stacks import CLAIM_KEY, Stack

from feature_platform.devtools import generator
from feature_platform.stores import freshness

SIZES = generator.Sizes(customers=120, merchants=12, days=5, transactions=800)


def _redis_snapshot(stack: Stack) -> dict[bytes, dict[bytes, bytes]]:
    """Every entity hash of the stack's Redis db with its raw fields and values (not the
    test's claim, nor the platform's own keys: test_freshness checks those)."""
    client = stack.redis()
    return {
        key: client.hgetall(key)
        for key in sorted(client.scan_iter(count=1000))
        if key != CLAIM_KEY.encode() and not key.startswith(freshness.KEY_PREFIX.encode())
    }


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def test_rerun_is_byte_identical_and_new_rows_are_picked_up(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory("dev", "mat")
    as_of = generator.default_as_of()
    tables = generator.generate(SIZES, seed=SEED, as_of=as_of)
    stack.write(tables)
    stack.feast("apply")

    first_end = _now()
    stack.materialize(first_end)
    first = _redis_snapshot(stack)
    assert len(first) > SIZES.customers // 2

    time.sleep(1.1)
    stack.materialize(_now())
    assert _redis_snapshot(stack) == first, "an incremental run with no new rows changed Redis"

    # Re-materializing each view over the interval its first run covered, as recorded in
    # the registry, rewrites nothing either.
    store = stack.store()
    for view in store.list_feature_views():
        start, end = view.materialization_intervals[0]
        store.materialize(start, end, feature_views=[view.name])
    assert _redis_snapshot(stack) == first, "re-materializing the same rows changed Redis"

    # New snapshot rows for three customers, stamped after the last run.
    time.sleep(1.1)
    new_at = pd.Timestamp(_now())
    fresh = tables["customer_stats"].drop_duplicates("customer_id").head(3).copy()
    fresh["event_timestamp"] = new_at
    fresh["created_timestamp"] = new_at
    fresh["avg_purchase_30d"] = [1111.0, 2222.0, 3333.0]
    tables["customer_stats"] = pd.concat([tables["customer_stats"], fresh], ignore_index=True)
    stack.write(tables)
    time.sleep(1.1)
    stack.materialize(_now())

    after = _redis_snapshot(stack)
    changed = [key for key in after if after[key] != first.get(key)]
    assert len(changed) == 3, f"expected exactly the 3 customers to change, got {len(changed)}"
    online = (
        stack.store()
        .get_online_features(
            features=["customer_stats:avg_purchase_30d"],
            entity_rows=[{"customer_id": int(c)} for c in fresh["customer_id"]],
        )
        .to_dict()
    )
    assert online["avg_purchase_30d"] == [1111.0, 2222.0, 3333.0]
