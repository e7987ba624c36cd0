"""The training-set command judges the offline rows it reads as materialization does: a
view under `refuse` with a bad row fails the command naming view, feature and rule; under
`quarantine` the bad row goes to the quarantine table and is left out of the set, so a
training set never holds a value the online store would not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import AS_OF, SEED, newest_event
from stacks import Stack

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.quality import database as quality_db
from feature_platform.quality import quarantine

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
# customer_txn_1h's, the repository's shortest
SHORTEST_TTL = timedelta(hours=2)
EARLIER = timedelta(minutes=10)
BAD_CUSTOMER, GOOD_CUSTOMER = 980_000_011, 980_000_012
NOW = pd.Timestamp(datetime.now(UTC)).floor("s")


def _with_bad_rows(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    event = newest_event(NOW)
    created = event
    merchants = tables["merchant_stats"]
    rating = merchants.iloc[[0]].assign(
        event_timestamp=event, created_timestamp=created, avg_rating=7.0
    )
    counters = pd.DataFrame(
        {
            "customer_id": [BAD_CUSTOMER, BAD_CUSTOMER, GOOD_CUSTOMER],
            # the bad customer's earlier row is good: it wins instead of the bad one
            "event_timestamp": [event - EARLIER, event, event],
            "created_timestamp": [created - EARLIER, created, created],
            "n_txn_1h": [2, -4, 3],
            "sum_amount_1h": [5.0, 10.0, 30.0],
        }
    )
    return {
        **tables,
        "merchant_stats": pd.concat([merchants, rating], ignore_index=True),
        "customer_txn_1h": pd.concat([tables["customer_txn_1h"], counters], ignore_index=True),
    }


@pytest.mark.parametrize("minutes", range(1, 24 * 60, 17))
def test_the_bad_rows_are_newest_and_served_at_any_hour(minutes: int) -> None:
    """After the newest generated snapshot, so they are their entities' newest rows, and
    within ttl of labels at now, so they are served: at every time of day."""
    snapshot = pd.Timestamp(AS_OF).floor("D")
    now = snapshot + timedelta(minutes=minutes)
    event = newest_event(now)
    assert snapshot < event < now
    assert now - (event - EARLIER) < SHORTEST_TTL


@pytest.fixture(scope="module")
def stacks(stack_factory: Callable[..., Stack]) -> Callable[[str], Stack]:
    made: dict[str, Stack] = {}

    def stack_of(env: str) -> Stack:
        if env not in made:
            stack = stack_factory(env, "quality_training")
            stack.write(_with_bad_rows(generator.generate(SIZES, seed=SEED, as_of=AS_OF)))
            stack.feast("apply")
            made[env] = stack
        return made[env]

    return stack_of


def _training_set(stack: Stack, tmp_path: Path, features: str) -> tuple[int, pd.DataFrame | None]:
    labels = pd.DataFrame(
        {"customer_id": [BAD_CUSTOMER, GOOD_CUSTOMER], "merchant_id": [1, 1],
         "event_timestamp": [NOW, NOW]}
    )  # fmt: skip
    labels.to_parquet(tmp_path / "labels.parquet")
    output = tmp_path / "training.parquet"
    args = ["training-set", stack.env, "--labels", str(tmp_path / "labels.parquet"),
            "--output", str(output), "--engine", "fast", "--features", features]  # fmt: skip
    with stack.active():
        code = cli.main(args)
    return code, pd.read_parquet(output) if code == 0 else None


def test_a_quarantined_row_is_left_out_and_recorded(
    env_name: str, stacks: Callable[[str], Stack], tmp_path: Path
) -> None:
    stack = stacks(env_name)
    code, rows = _training_set(stack, tmp_path, "customer_txn_1h:n_txn_1h")
    assert code == 0 and rows is not None
    by_customer = dict(zip(rows["customer_id"], rows["n_txn_1h"], strict=True))
    assert by_customer == {BAD_CUSTOMER: 2, GOOD_CUSTOMER: 3}
    entries = quarantine.read(quality_db.for_settings(stack.settings()), "customer_txn_1h", 100)
    found = [e for e in entries if e["row"]["customer_id"] == BAD_CUSTOMER]
    assert [(e["source"], e["rules"], e["row"]["n_txn_1h"]) for e in found] == [
        ("training", "n_txn_1h: min 0", -4)
    ]


def test_a_refusing_view_fails_the_set_naming_the_rule(
    env_name: str, stacks: Callable[[str], Stack], tmp_path: Path, capsys: Any
) -> None:
    stack = stacks(env_name)
    code, _ = _training_set(stack, tmp_path, "merchant_stats:avg_rating")
    assert code == 1
    _, err = capsys.readouterr()
    assert (
        "training-set: expectations not met: merchant_stats.avg_rating breaks 'max 5' at "
        "merchant_id=1 (value 7.0)"
    ) in err
    assert not (tmp_path / "training.parquet").exists()


def test_labels_outside_their_expected_share_refuse_the_set(
    env_name: str, stacks: Callable[[str], Stack], tmp_path: Path, capsys: Any
) -> None:
    """fraud_detection_v1 expects 0.2% to 10% of its labels to be fraud: labels that are
    all fraud (a broken labels pipeline) refuse the set before a row is joined."""
    stack = stacks(env_name)
    labels = pd.DataFrame(
        {"customer_id": [GOOD_CUSTOMER] * 1_200, "merchant_id": [1] * 1_200,
         "event_timestamp": [NOW] * 1_200, "amount": [10.0] * 1_200, "is_fraud": [True] * 1_200}
    )  # fmt: skip
    labels.to_parquet(tmp_path / "labels.parquet")
    output = tmp_path / "training.parquet"
    with stack.active():
        code = cli.main(["training-set", stack.env, "--labels", str(tmp_path / "labels.parquet"),
                         "--output", str(output)])  # fmt: skip
    assert code == 1
    _, err = capsys.readouterr()
    assert (
        "training-set: expectations not met: fraud_detection_v1: label is_fraud: share of "
        "positives 1, expected 0.002 to 0.1"
    ) in err
    assert not output.exists()
