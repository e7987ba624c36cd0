"""Materialization checks the rows it reads against each view's expectations: a view
under `refuse` with a bad row is not loaded (the job fails naming it, its watermark
stays) while the other views load; under `quarantine` the bad rows go to the quarantine
table and are skipped, and an entity's row before a quarantined one is loaded instead."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from conftest import AS_OF, SEED, newest_event
from stacks import Stack

from feature_platform.devtools import generator
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.quality import database as quality_db
from feature_platform.quality import quarantine

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
BAD_CUSTOMER, GOOD_CUSTOMER = 980_000_001, 980_000_002
# newest row bad, the one before it good: online must hold the good one, as training does
BAD_AFTER_GOOD = 980_000_003


def _with_bad_rows(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    event = newest_event(pd.Timestamp(datetime.now(UTC)))
    created = event
    merchants = tables["merchant_stats"]
    rating = merchants.iloc[[0]].assign(
        event_timestamp=event, created_timestamp=created, avg_rating=7.0
    )
    earlier = pd.Timedelta(minutes=10)
    counters = pd.DataFrame(
        {
            "customer_id": [BAD_CUSTOMER, GOOD_CUSTOMER, BAD_AFTER_GOOD, BAD_AFTER_GOOD],
            "event_timestamp": [event, event, event - earlier, event],
            "created_timestamp": [created, created, created - earlier, created],
            "n_txn_1h": [-4, 3, 5, -6],
            "sum_amount_1h": [10.0, 30.0, 1.0, 1.0],
        }
    )
    return {
        **tables,
        "merchant_stats": pd.concat([merchants, rating], ignore_index=True),
        "customer_txn_1h": pd.concat([tables["customer_txn_1h"], counters], ignore_index=True),
    }


@pytest.fixture(scope="module")
def stacks(stack_factory: Callable[..., Stack]) -> Iterator[Callable[[str], dict[str, Any]]]:
    """Per environment: the stack, the job's exit code and lines, materialized once."""
    made: dict[str, Any] = {}

    def run(env: str) -> dict[str, Any]:
        if env not in made:
            stack = stack_factory(env, "quality_mat")
            stack.write(_with_bad_rows(generator.generate(SIZES, seed=SEED, as_of=AS_OF)))
            stack.feast("apply")
            lines: list[str] = []
            with stack.active():
                code = materialize.job(env, None, lines.append)
            made[env] = {"stack": stack, "code": code, "lines": lines}
        return made[env]

    yield run
    for each in made.values():
        each["stack"].close()


@pytest.fixture
def run(env_name: str, stacks: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    return stacks(env_name)


def _online(stack: Stack, customers: list[int]) -> list[Any]:
    with stack.active(), view_rows.job_store(stack.env) as store:
        served = store.get_online_features(
            features=["customer_txn_1h:n_txn_1h"],
            entity_rows=[{"customer_id": c} for c in customers],
        ).to_dict()
    return list(served["n_txn_1h"])


def test_a_refusing_view_is_not_loaded_and_the_job_fails_naming_it(run: dict[str, Any]) -> None:
    assert run["code"] == 1
    failed = [line for line in run["lines"] if line.startswith("materialize failed")]
    assert failed == [
        "materialize failed: merchant_stats: Refused: expectations not met: "
        "merchant_stats.avg_rating breaks 'max 5' at merchant_id=1 (value 7.0); its watermark "
        "and interval stay, the next run loads its rows again"
    ]
    stack: Stack = run["stack"]
    with stack.active(), view_rows.job_store(stack.env) as store:
        watermarks = Watermarks(store.registry, store.project)
        assert watermarks.get("merchant_stats") is None
        assert watermarks.get("customer_stats") is not None
        assert watermarks.get("customer_txn_1h") is not None


def test_quarantined_rows_are_set_aside_and_the_rest_loaded(run: dict[str, Any]) -> None:
    stack: Stack = run["stack"]
    assert _online(stack, [BAD_CUSTOMER, GOOD_CUSTOMER, BAD_AFTER_GOOD]) == [None, 3, 5]
    assert "  customer_txn_1h: 2 rows quarantined" in run["lines"]
    entries = quarantine.read(quality_db.for_settings(stack.settings()), "customer_txn_1h", 100)
    [entry] = [e for e in entries if e["row"]["customer_id"] == BAD_CUSTOMER]
    assert (entry["source"], entry["rules"]) == ("materialization", "n_txn_1h: min 0")
    assert entry["row"]["n_txn_1h"] == -4


def test_a_quarantined_row_leaves_training_as_it_leaves_serving(run: dict[str, Any]) -> None:
    """Kept out of Redis while training still read it, the row would be exactly the skew
    the skew check exists to catch: it leaves the offline table too."""
    stack: Stack = run["stack"]
    labels = pd.DataFrame(
        {
            "customer_id": [BAD_CUSTOMER, GOOD_CUSTOMER, BAD_AFTER_GOOD],
            "event_timestamp": [pd.Timestamp(datetime.now(UTC))] * 3,
        }
    )
    with stack.active(), view_rows.job_store(stack.env) as store:
        training = store.get_historical_features(
            entity_df=labels, features=["customer_txn_1h:n_txn_1h"]
        ).to_df()
    by_customer = dict(zip(training["customer_id"], training["n_txn_1h"], strict=True))
    assert pd.isna(by_customer[BAD_CUSTOMER])
    assert by_customer[GOOD_CUSTOMER] == 3
    # the newest row quarantined on the first load: the row before it, in both stores
    assert by_customer[BAD_AFTER_GOOD] == 5
    assert _online(stack, [BAD_CUSTOMER, GOOD_CUSTOMER, BAD_AFTER_GOOD]) == [None, 3, 5]
