"""The ttl rule on Feast's own response builder, at the offline store's boundary.

The offline joins keep a value for a label at t while `event_time >= t - ttl`
(Postgres and duckdb alike, see tests/integration/training/test_point_in_time.py): a value
exactly ttl old is served, one a microsecond older is not.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast import utils as feast_utils
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus, GetOnlineFeaturesResponse
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Int64

from feature_platform.stores import online_ttl

EVENT = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


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
    online_ttl.install()
    monkeypatch.setattr(online_ttl.time, "time", now.timestamp)
    response = GetOnlineFeaturesResponse()
    feast_utils._populate_response_from_feature_data(
        ["n"], [(EVENT, {"n": Value(int64_val=7)})], [[0]], response, False, view, 1
    )
    vector = response.results[0]
    return vector.statuses[0], vector.values[0], vector.event_timestamps[0].ToDatetime(UTC)


def test_a_value_exactly_ttl_old_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    view = _view(timedelta(hours=2))
    status, value, ts = _read_at(EVENT + timedelta(hours=2), view, monkeypatch)
    assert (status, value.int64_val, ts) == (FieldStatus.PRESENT, 7, EVENT)


def test_a_microsecond_past_the_ttl_is_withheld(monkeypatch: pytest.MonkeyPatch) -> None:
    view = _view(timedelta(hours=2))
    status, value, ts = _read_at(EVENT + timedelta(hours=2) + MICROSECOND, view, monkeypatch)
    # Null, with the event time kept so a client can tell how old the value is.
    assert status == FieldStatus.OUTSIDE_MAX_AGE
    assert value.WhichOneof("val") is None
    assert ts == EVENT


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


def test_install_twice_wraps_once() -> None:
    online_ttl.install()
    wrapped = feast_utils._populate_response_from_feature_data
    online_ttl.install()
    assert feast_utils._populate_response_from_feature_data is wrapped
