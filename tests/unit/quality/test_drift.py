"""Drift flags exactly the features a shift was injected into, and almost never a feature
of undrifted data: two data sets drawn from the same generator with different seeds."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from feature_platform.devtools import generator
from feature_platform.quality import drift

AS_OF = pd.Timestamp("2026-03-15 14:00", tz="UTC").to_pydatetime()
SIZES = generator.Sizes(customers=2_000, merchants=1_000, days=3, transactions=20_000)
FEATURES = {
    "customer_stats": ["avg_purchase_30d", "n_purchases_7d", "n_purchases_30d",
                       "account_age_days", "home_country"],
    "merchant_stats": ["avg_rating", "n_disputes_30d", "n_sales_30d", "category"],
    "customer_txn_1h": ["n_txn_1h", "sum_amount_1h"],
    "transactions": ["amount", "is_fraud"],
}  # fmt: skip
# The label is what the model learns: a smaller shift of its share matters.
OVERRIDES = {"is_fraud": {"js": 0.03}}
Tables = dict[str, pd.DataFrame]


def _tables(seed: int) -> Tables:
    return generator.generate(SIZES, seed=seed, as_of=AS_OF, progress=lambda _: None)


def flagged(reference: Tables, current: Tables) -> set[str]:
    found = set()
    for table, features in FEATURES.items():
        for feature in features:
            result = drift.compare(
                feature, reference[table][feature], current[table][feature],
                OVERRIDES.get(feature),
            )  # fmt: skip
            if result.drifted:
                found.add(feature)
    return found


def _scaled_amount_in_one_country(tables: Tables) -> Tables:
    """Cents instead of euros, from one market's pipeline."""
    stats = tables["customer_stats"].copy()
    germany = stats["home_country"] == "DE"
    stats.loc[germany, "avg_purchase_30d"] *= 100
    return {**tables, "customer_stats": stats}


def _more_nulls(tables: Tables) -> Tables:
    stats = tables["merchant_stats"].copy()
    lost = np.random.default_rng(5).random(len(stats)) < 0.2
    stats["n_sales_30d"] = stats["n_sales_30d"].astype(float).mask(lost)
    return {**tables, "merchant_stats": stats}


def _renamed_category(tables: Tables) -> Tables:
    stats = tables["merchant_stats"].copy()
    stats["category"] = stats["category"].replace({"travel": "trips"})
    return {**tables, "merchant_stats": stats}


def _label_share_doubled(tables: Tables) -> Tables:
    labels = tables["transactions"].copy()
    share = labels["is_fraud"].mean()
    rng = np.random.default_rng(7)
    flip = ~labels["is_fraud"] & (rng.random(len(labels)) < share / (1 - share))
    labels["is_fraud"] = labels["is_fraud"] | flip
    return {**tables, "transactions": labels}


SHIFTS: dict[str, tuple[Callable[[Tables], Tables], str]] = {
    "scaled amount": (_scaled_amount_in_one_country, "avg_purchase_30d"),
    "null rate raised": (_more_nulls, "n_sales_30d"),
    "category renamed": (_renamed_category, "category"),
    "label share changed": (_label_share_doubled, "is_fraud"),
}


@pytest.fixture(scope="module")
def reference() -> Tables:
    return _tables(1)


@pytest.fixture(scope="module")
def current() -> Tables:
    return _tables(2)


@pytest.mark.parametrize("shift", SHIFTS)
def test_a_shift_flags_exactly_its_feature(shift: str, reference: Tables, current: Tables) -> None:
    inject, feature = SHIFTS[shift]
    assert flagged(reference, inject(current)) == {feature}


def test_all_shifts_at_once_flag_exactly_their_features(reference: Tables, current: Tables) -> None:
    shifted = current
    for inject, _ in SHIFTS.values():
        shifted = inject(shifted)
    assert flagged(reference, shifted) == {feature for _, feature in SHIFTS.values()}


def test_undrifted_data_raises_almost_no_false_alarm() -> None:
    """Pairs of seeds: each of the 13 features is a chance of a false alarm."""
    pairs = [(seed, seed + 100) for seed in range(25)]
    alarms = sum(len(flagged(_tables(a), _tables(b))) for a, b in pairs)
    chances = len(pairs) * sum(len(features) for features in FEATURES.values())
    assert alarms / chances <= 0.01, f"{alarms} false alarms in {chances} comparisons"


def test_small_samples_use_tests_of_significance() -> None:
    rng = np.random.default_rng(3)
    same = drift.compare("x", pd.Series(rng.normal(size=100)), pd.Series(rng.normal(size=100)))
    moved = drift.compare("x", pd.Series(rng.normal(size=100)), pd.Series(rng.normal(1, size=100)))
    assert same.main.test == "ks" and not same.drifted
    assert moved.drifted
    kinds = drift.compare("c", pd.Series(["a", "b"] * 50), pd.Series(["a"] * 90 + ["b"] * 10))
    assert kinds.main.test == "chi2" and kinds.drifted


def test_psi_of_identical_samples_is_zero_and_grows_with_the_shift() -> None:
    values = np.random.default_rng(4).normal(size=5_000)
    assert drift.psi(values, values) == pytest.approx(0, abs=1e-12)
    small, large = drift.psi(values, values + 0.1), drift.psi(values, values + 1)
    assert 0 < small < 0.2 < large
