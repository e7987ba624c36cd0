"""The skew check's pure parts: the comparison, the whole-hour rule, the sample."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.types import Bool, Float64, Int64, String

from feature_platform.checks import comparison
from feature_platform.checks import skew as skew_check
from feature_platform.checks.comparison import Mismatch
from feature_platform.config.guard import ConfigError

TYPES = {"n": Int64, "avg": Float64, "country": String, "flag": Bool}


def _compare(online: dict, offline: dict) -> list[Mismatch]:
    return comparison.mismatches([online], [offline], TYPES)


def test_equal_values_of_the_declared_types_match() -> None:
    row = {"n": 4, "avg": 4.0, "country": "DE", "flag": True}
    assert _compare(row, row) == []
    # Nulls match nulls, whatever the feature's type.
    nulls = dict.fromkeys(TYPES)
    assert _compare(nulls, nulls) == []


def test_a_served_value_of_another_type_is_a_mismatch_even_when_equal() -> None:
    trained = {"n": 4, "avg": 4.0, "country": "DE", "flag": True}
    served = {"n": 4.0, "avg": 4, "country": "DE", "flag": 1}
    assert _compare(served, trained) == [
        Mismatch(0, "n", 4.0, 4, "served float 4.0, declared Int64"),
        Mismatch(0, "avg", 4, 4.0, "served int 4, declared Float64"),
        Mismatch(0, "flag", 1, True, "served int 1, declared Bool"),
    ]


def test_different_values_and_a_null_on_one_side_are_mismatches() -> None:
    trained = {"n": 4, "avg": 2.5, "country": "DE", "flag": False}
    served = {"n": 5, "avg": None, "country": "DE", "flag": False}
    assert [(m.feature, m.problem) for m in _compare(served, trained)] == [
        ("n", "values differ"),
        ("avg", "values differ"),
    ]


def test_training_values_convert_to_the_declared_type_only_without_loss() -> None:
    # pandas holds an Int64 column with a null as floats, and nulls as NaN.
    df = pd.DataFrame(
        {"n": [4.0, np.nan, 4.5], "avg": [1.25, np.nan, 3.0], "country": ["DE", None, "FR"],
         "flag": [True, None, False]}
    )  # fmt: skip
    rows = comparison.offline_rows(df, TYPES)
    assert rows[0] == {"n": 4, "avg": 1.25, "country": "DE", "flag": True}
    assert type(rows[0]["n"]) is int
    assert rows[1] == dict.fromkeys(TYPES)
    served = {"n": 4, "avg": 3.0, "country": "FR", "flag": False}
    assert [m.problem for m in comparison.mismatches([served], [rows[2]], TYPES)] == [
        "training holds float 4.5, declared Int64"
    ]


def test_rows_are_compared_in_order_and_counted() -> None:
    online = [{"n": 1}, {"n": 2}]
    with pytest.raises(ValueError, match="2 served rows against 1 training rows"):
        comparison.mismatches(online, [{"n": 1}], {"n": Int64})
    assert [m.row for m in comparison.mismatches(online, [{"n": 1}, {"n": 3}], {"n": Int64})] == [1]


def test_only_scalar_features_are_compared() -> None:
    from feast.types import Array

    scalar, others = comparison.comparable({"n": Int64, "v": Array(Float64)})
    assert (scalar, others) == ({"n": Int64}, ["v"])


HOUR = datetime(2026, 3, 1, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "crosses"),
    [
        (HOUR - timedelta(seconds=0.5), HOUR + timedelta(seconds=0.2), True),
        # At the hour itself a training row still sees a value whose ttl ends then; a
        # read a moment later withholds it.
        (HOUR, HOUR + timedelta(seconds=0.2), True),
        (HOUR - timedelta(seconds=1), HOUR - timedelta(microseconds=1), False),
        (HOUR + timedelta(seconds=0.1), HOUR + timedelta(minutes=59), False),
    ],
)
def test_a_read_crosses_a_whole_hour(start: datetime, end: datetime, crosses: bool) -> None:
    assert skew_check.crosses_whole_hour(start, end) is crosses


def _clock(*times: datetime) -> Iterator[datetime]:
    yield from times


def test_a_read_across_a_whole_hour_is_done_again_once() -> None:
    reads: list[int] = []
    ticks = _clock(HOUR - timedelta(seconds=0.1), HOUR + timedelta(seconds=0.1),
                   HOUR + timedelta(seconds=0.2))  # fmt: skip

    def read() -> int:
        reads.append(len(reads))
        return len(reads)

    instant, result, again = skew_check.at_one_instant(read, clock=lambda: next(ticks))
    assert (instant, result, again) == (HOUR + timedelta(seconds=0.2), 2, True)
    assert reads == [0, 1]


def test_a_read_inside_an_hour_is_done_once() -> None:
    ticks = _clock(HOUR + timedelta(seconds=1), HOUR + timedelta(seconds=2))
    instant, result, again = skew_check.at_one_instant(lambda: "read", clock=lambda: next(ticks))
    assert (instant, result, again) == (HOUR + timedelta(seconds=1), "read", False)


def test_the_sample_draws_known_keys_a_few_never_seen_and_typed_request_data() -> None:
    pools = {"customer_id": [3, 5, 8], "merchant_id": [1, 2]}
    rows, never_seen = skew_check.sample_rows(pools, {"amount": Float64}, 200, seed=4)
    assert never_seen == {"customer_id": 10, "merchant_id": 10}
    assert rows[skew_check.ID_COLUMN].tolist() == list(range(200))
    for key, pool in pools.items():
        unseen = sorted(set(rows[key]) - set(pool))
        assert unseen == list(range(max(pool) + 1, max(pool) + 11))
        assert set(pool) <= set(rows[key])
    amounts = rows["amount"].tolist()
    assert all(type(a) is float and a > 0 and round(a, 2) == a for a in amounts)
    # The same seed, the same sample.
    again, _ = skew_check.sample_rows(pools, {"amount": Float64}, 200, seed=4)
    pd.testing.assert_frame_equal(rows, again)


def test_no_recent_keys_stops_the_check() -> None:
    with pytest.raises(skew_check.CheckError, match="no recent rows with a customer_id"):
        skew_check.sample_rows({"customer_id": []}, {}, 10, seed=1)


def test_the_server_token_is_read_from_its_file_at_each_run(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    settings = {skew_check.SERVER_TOKEN_FILE_VAR: str(token_file), skew_check.SERVER_TOKEN_VAR: "x"}
    assert skew_check.server_token(settings) == "first"
    token_file.write_text("renewed")  # the kubelet rotates projected tokens in place
    assert skew_check.server_token(settings) == "renewed"
    assert skew_check.server_token({skew_check.SERVER_TOKEN_VAR: "value"}) == "value"
    assert skew_check.server_token({}) is None
    token_file.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        skew_check.server_token(settings)
