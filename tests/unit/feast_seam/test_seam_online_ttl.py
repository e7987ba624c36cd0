"""patches.online_ttl: the ttl rule on Feast's own response builder, at the offline
store's boundary.

The offline joins keep a value for a label at t while `event_time >= t - ttl`
(Postgres and duckdb alike, see tests/integration/training/test_point_in_time.py): a value
exactly ttl old is served, one a microsecond older is not.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast import utils as feast_utils
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Int64
from seam_helpers import NOW, TTL, assert_params

from feature_platform.stores import online_ttl

EVENT = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def _install() -> None:
    from feature_platform.feast_seam import patches

    patches.install_online_ttl(online_ttl.ttl_seconds, online_ttl.is_expired)


def _view(ttl: timedelta | None) -> FeatureView:
    return FeatureView(
        name="counts",
        entities=[Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)],
        ttl=ttl,
        schema=[Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
    )


def _read_at(now: datetime, view: FeatureView, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Status, value and timestamp of one stored row, read at `now`."""
    _install()
    monkeypatch.setattr(time, "time", now.timestamp)
    response = GetOnlineFeaturesResponse()
    feast_utils._populate_response_from_feature_data(
        ["n"], [(EVENT, {"n": Value(int64_val=7)})], [[0]], response, False, view, 1
    )
    vector = response.results[0]
    return vector.statuses[0], vector.values[0], vector.event_timestamps[0].ToDatetime(UTC)


@pytest.mark.seam("patches.online_ttl")
def test_the_patched_builder_takes_what_feast_passes() -> None:
    _install()
    patched = feast_utils._populate_response_from_feature_data
    assert_params(
        patched.__wrapped__,
        "requested_features, read_rows, indexes, online_features_response, "
        "full_feature_names, table, output_len",
    )


@pytest.mark.seam("patches.online_ttl")
def test_a_value_exactly_ttl_old_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    view = _view(timedelta(hours=2))
    status, value, ts = _read_at(EVENT + timedelta(hours=2), view, monkeypatch)
    assert (status, value.int64_val, ts) == (FieldStatus.PRESENT, 7, EVENT)


@pytest.mark.seam("patches.online_ttl")
def test_a_microsecond_past_the_ttl_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    view = _view(timedelta(hours=2))
    status, value, ts = _read_at(EVENT + timedelta(hours=2) + MICROSECOND, view, monkeypatch)
    # Null, with the event time kept so a client can tell how old the value is.
    assert status == FieldStatus.OUTSIDE_MAX_AGE
    assert value.WhichOneof("val") is None
    assert ts == EVENT


@pytest.mark.seam("patches.online_ttl")
@pytest.mark.parametrize("ttl", [None, timedelta(0)])
def test_a_view_without_ttl_never_expires(
    ttl: timedelta | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, value, _ = _read_at(EVENT + timedelta(days=3650), _view(ttl), monkeypatch)
    assert (status, value.int64_val) == (FieldStatus.PRESENT, 7)


def test_the_fast_path_uses_the_same_bound() -> None:
    ttl_s = online_ttl.ttl_seconds(timedelta(hours=2))
    at_bound = EVENT.timestamp() + ttl_s
    assert not online_ttl.is_expired(EVENT.timestamp(), ttl_s, at_bound)
    assert online_ttl.is_expired(EVENT.timestamp(), ttl_s, at_bound + 1e-6)
    assert not online_ttl.is_expired(0.0, online_ttl.ttl_seconds(None), at_bound)


@pytest.mark.seam("patches.online_ttl")
def test_install_twice_wraps_once() -> None:
    _install()
    wrapped = feast_utils._populate_response_from_feature_data
    _install()
    assert feast_utils._populate_response_from_feature_data is wrapped


@pytest.mark.seam("patches.online_ttl")
def test_get_online_features_goes_through_the_patched_builder(store: Any) -> None:
    # The store's type is the platform's SQLite store: importing it installed the rule.
    assert hasattr(feast_utils._populate_response_from_feature_data, "__wrapped__")
    old, fresh = NOW - TTL - timedelta(minutes=1), NOW - timedelta(minutes=1)
    store.write_to_online_store(
        "counts",
        pd.DataFrame(
            {"customer_id": [1, 2], "n": [7, 8], "event_timestamp": [old, fresh],
             "created": [NOW, NOW]}
        ),
    )  # fmt: skip
    response = store.get_online_features(
        features=["counts:n"], entity_rows=[{"customer_id": 1}, {"customer_id": 2}]
    ).proto
    n = list(response.metadata.feature_names.val).index("n")
    statuses = [vector.statuses for vector in response.results][n]
    assert list(statuses) == [FieldStatus.OUTSIDE_MAX_AGE, FieldStatus.PRESENT]
