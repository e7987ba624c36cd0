"""The training rule over generated snapshot histories: Postgres and duckdb build the
same training rows, and each equals what the online store would have served at the
label's instant, had every row been written to it at its creation time.

Histories hold late rows (created hours after their event time), restatements (same
event time, later creation time), rows past the ttl and rows without a creation time.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from property_settings import COSTLY_EXAMPLES
from stacks import Stack

D0 = pd.Timestamp("2026-01-10", tz="UTC")
TTL = pd.Timedelta(days=2)  # customer_stats

# (customer, event hour, creation lag in minutes or None for a NULL creation time, value)
_row = st.tuples(
    st.integers(1, 6),
    st.integers(0, 96),
    st.one_of(st.none(), st.integers(1, 600)),
    st.integers(1, 10_000).map(lambda v: v / 100),
)


@pytest.fixture(scope="module")
def rule_stacks(stack_factory: Callable[..., Stack]) -> dict[str, Stack]:
    stacks = {env: stack_factory(env, "rule") for env in ("local", "dev")}
    for stack in stacks.values():
        stack.write(_tables(_snapshots([(1, 0, None, 1.0)])))
        stack.feast("apply")
    return stacks


def _snapshots(rows: list[tuple[int, int, int | None, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["customer_id", "hour", "lag", "avg_purchase_30d"])
    # One row per (customer, event time, creation time): a tie would have no winner.
    df = df.drop_duplicates(["customer_id", "hour", "lag"]).reset_index(drop=True)
    df["event_timestamp"] = D0 + pd.to_timedelta(df["hour"], unit="h")
    lag = pd.to_timedelta(df["lag"].astype("float64"), unit="min")
    df["created_timestamp"] = (df["event_timestamp"] + lag).where(df["lag"].notna(), pd.NaT)
    df["created_timestamp"] = pd.to_datetime(df["created_timestamp"], utc=True)
    return df.drop(columns=["hour", "lag"])


def _empty(columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in columns.items()})


STAMPS = {"event_timestamp": "datetime64[us, UTC]", "created_timestamp": "datetime64[us, UTC]"}


def _tables(snapshots: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The snapshots as `customer_stats`; the service's other views without rows."""
    return {
        "customer_stats": snapshots.assign(
            n_purchases_7d=1, n_purchases_30d=4, account_age_days=30, home_country="FR"
        ),
        "merchant_stats": _empty(
            {
                "merchant_id": "int64",
                **STAMPS,
                "avg_rating": "float64",
                "n_disputes_30d": "int64",
                "n_sales_30d": "int64",
                "category": "object",
            }
        ),
        "customer_txn_1h": _empty(
            {"customer_id": "int64", **STAMPS, "n_txn_1h": "int64", "sum_amount_1h": "float64"}
        ),
    }


def replayed(
    rows: pd.DataFrame, feature: str, at: pd.Timestamp, ttl: pd.Timedelta = TTL
) -> float | None:
    """What the online store serves at `at` from one entity's `rows` if each row was
    written at its creation time (a NULL one: its event time), newer (event, creation)
    pairs replacing older ones, under the ttl rule."""
    visible_from = rows["created_timestamp"].fillna(rows["event_timestamp"])
    written = rows.assign(visible_from=visible_from)[visible_from <= at]
    if written.empty:
        return None
    newest = written.sort_values(["event_timestamp", "visible_from"]).iloc[-1]
    if newest["event_timestamp"] < at - ttl or pd.isna(newest[feature]):
        return None
    return float(newest[feature])


def _labels(snapshots: pd.DataFrame, hours: list[int]) -> pd.DataFrame:
    """Label times on a grid and exactly at every row's creation time."""
    times = [D0 + pd.Timedelta(minutes=m) for m in hours]
    times += snapshots["created_timestamp"].dropna().tolist()
    times += snapshots["event_timestamp"].tolist()
    customers = range(1, 7)
    grid = [(c, t) for c in customers for t in times]
    labels = pd.DataFrame(grid, columns=["customer_id", "event_timestamp"])
    labels = labels.drop_duplicates().reset_index(drop=True)
    return labels.assign(merchant_id=1, amount=20.0, label_id=range(len(labels)))


@settings(COSTLY_EXAMPLES, max_examples=12)
@given(
    rows=st.lists(_row, min_size=1, max_size=30),
    minutes=st.lists(st.integers(0, 120 * 60), min_size=1, max_size=8),
)
def test_training_rows_equal_a_replay_of_online_writes(
    rule_stacks: dict[str, Stack], rows: list, minutes: list[int]
) -> None:
    snapshots = _snapshots(rows)
    labels = _labels(snapshots, minutes)
    trained = {}
    for env, stack in rule_stacks.items():
        stack.write(_tables(snapshots))
        result = stack.training_set(labels).set_index("label_id").sort_index()
        assert len(result) == len(labels), f"{env} dropped label rows"
        trained[env] = [
            None if pd.isna(v) else float(v) for v in result["avg_purchase_30d"].tolist()
        ]
    assert trained["local"] == trained["dev"]
    for i, label in labels.iterrows():
        history = snapshots[snapshots["customer_id"] == label["customer_id"]]
        expected = replayed(history, "avg_purchase_30d", label["event_timestamp"])
        assert trained["dev"][i] == expected, (
            f"customer {label['customer_id']} at {label['event_timestamp']}: trained "
            f"{trained['dev'][i]}, replay {expected}\n"
            f"{snapshots[snapshots['customer_id'] == label['customer_id']]}"
        )
    print(f"training rule: {len(labels)} label rows over {len(snapshots)} snapshot rows")


# -- the generated data set: late rows are the common case ------------------------------

# view -> (its table's key, one feature, ttl)
GENERATED_VIEWS = {
    "customer_stats": ("customer_id", "avg_purchase_30d", pd.Timedelta(days=2)),
    "merchant_stats": ("merchant_id", "avg_rating", pd.Timedelta(days=3)),
    "customer_txn_1h": ("customer_id", "n_txn_1h", pd.Timedelta(hours=2)),
}


def test_generated_training_sets_hold_no_value_created_after_its_label(
    deployed_local: Stack, deployed_dev: Stack, generated_tables: dict[str, pd.DataFrame]
) -> None:
    labels = generated_tables["transactions"].sample(300, random_state=4)
    labels = labels.sort_values("transaction_id").reset_index(drop=True)
    local_set = deployed_local.training_set(labels).set_index("transaction_id")
    dev_set = deployed_dev.training_set(labels).set_index("transaction_id")
    by_key = {
        view: dict(tuple(generated_tables[view].groupby(key)))
        for view, (key, _, _) in GENERATED_VIEWS.items()
    }
    for view, (key, feature, ttl) in GENERATED_VIEWS.items():
        for label in labels.itertuples():
            history = by_key[view].get(getattr(label, key))
            expected = (
                None if history is None else replayed(history, feature, label.event_timestamp, ttl)
            )
            for name, trained in (("local", local_set), ("dev", dev_set)):
                value = trained.loc[label.transaction_id, feature]
                got = None if pd.isna(value) else float(value)
                assert got == expected, (
                    f"{name} {view}.{feature} for transaction {label.transaction_id}: "
                    f"trained {got}, replay {expected}"
                )
