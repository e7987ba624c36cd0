from __future__ import annotations

import pandas as pd
import pytest

from feature_platform.devtools import generator

AS_OF = pd.Timestamp("2026-03-15 14:00", tz="UTC").to_pydatetime()
SIZES = generator.Sizes(customers=400, merchants=40, days=12, transactions=4_000)


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return generator.generate(SIZES, seed=7, as_of=AS_OF)


def test_same_seed_same_rows(tables: dict[str, pd.DataFrame]) -> None:
    again = generator.generate(SIZES, seed=7, as_of=AS_OF)
    for name in generator.TABLES:
        pd.testing.assert_frame_equal(tables[name], again[name])


def test_another_seed_other_rows(tables: dict[str, pd.DataFrame]) -> None:
    other = generator.generate(SIZES, seed=8, as_of=AS_OF)
    assert not tables["transactions"].equals(other["transactions"])


def test_nothing_happens_after_as_of(tables: dict[str, pd.DataFrame]) -> None:
    for name, df in tables.items():
        assert (df["event_timestamp"] <= pd.Timestamp(AS_OF)).all(), name
        if "created_timestamp" in df:
            assert (df["created_timestamp"] >= df["event_timestamp"]).all(), name
            assert (df["created_timestamp"] <= pd.Timestamp(AS_OF)).all(), name


def test_new_customers_have_no_history(tables: dict[str, pd.DataFrame]) -> None:
    with_history = set(tables["customer_stats"]["customer_id"])
    buying = set(tables["transactions"]["customer_id"])
    assert len(set(range(1, SIZES.customers + 1)) - with_history) >= SIZES.customers // 50
    assert buying - with_history, "some transactions come from customers without snapshots"


def test_some_merchants_stop_sending_snapshots(tables: dict[str, pd.DataFrame]) -> None:
    last = tables["merchant_stats"].groupby("merchant_id")["event_timestamp"].max()
    stopped = last[last < pd.Timestamp(AS_OF) - pd.Timedelta(days=3)]
    assert len(stopped) >= 1


def test_restatements_have_a_later_created_time(tables: dict[str, pd.DataFrame]) -> None:
    stats = tables["customer_stats"]
    repeated = stats[stats.duplicated(["customer_id", "event_timestamp"], keep=False)]
    assert len(repeated) > 0
    for _, group in repeated.groupby(["customer_id", "event_timestamp"]):
        assert group["created_timestamp"].is_unique


def test_missing_values_on_purpose(tables: dict[str, pd.DataFrame]) -> None:
    assert tables["merchant_stats"]["avg_rating"].isna().any()
    late = (
        tables["customer_stats"]["created_timestamp"] - tables["customer_stats"]["event_timestamp"]
    )
    assert (late > pd.Timedelta(days=1)).any(), "some rows arrive a day late"


def test_labels_are_realistic(tables: dict[str, pd.DataFrame]) -> None:
    labels = tables["transactions"]
    assert labels["transaction_id"].is_unique
    assert labels["event_timestamp"].is_monotonic_increasing
    assert 0.001 < labels["is_fraud"].mean() < 0.2
    assert (labels["amount"] > 0).all()


def test_sizes_must_be_positive() -> None:
    with pytest.raises(ValueError, match="customers must be at least 1"):
        generator.generate(generator.Sizes(customers=0))
