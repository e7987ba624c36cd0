"""The column-wise encoding writes Feast's bytes: keys, values and times, for any values.

The reference is Feast's own path: `_convert_arrow_to_proto` on the same Arrow batch,
then the serialization its Redis store applies (`_redis_key`, `Value.SerializeToString`,
`Timestamp.FromDatetime` of the row's version).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast import utils as feast_utils
from feast.infra.online_stores.helpers import _redis_key
from feast.types import Bool, Float32, Float64, Int32, Int64, String
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_platform.stores import redis_encoding
from feature_platform.stores.training_rule import row_version

PROJECT = "fraud_detection"
FEATURES = [
    ("i64", Int64, pa.int64()),
    ("i32", Int32, pa.int32()),
    ("f64", Float64, pa.float64()),
    ("f32", Float32, pa.float32()),
    ("text", String, pa.string()),
    ("flag", Bool, pa.bool_()),
]
KEYS = {"customer_id": (ValueType.INT64, pa.int64()), "region": (ValueType.STRING, pa.string())}
TIME = pa.timestamp("us", tz="UTC")


def _view(join_keys: list[str]) -> FeatureView:
    entities = [Entity(name=k, join_keys=[k], value_type=KEYS[k][0]) for k in join_keys]
    key_fields = [Field(name=k, dtype=Int64 if KEYS[k][0] == ValueType.INT64 else String)
                  for k in join_keys]  # fmt: skip
    return FeatureView(
        name="mixed",
        entities=entities,
        schema=[*key_fields, *(Field(name=n, dtype=t) for n, t, _ in FEATURES)],
        source=FileSource(
            path="unused.parquet",
            timestamp_field="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )


def _feast_bytes(batch: pa.RecordBatch, view: FeatureView, join_keys: dict) -> list[tuple]:
    rows = []
    for key, values, event, created in feast_utils._convert_arrow_to_proto(batch, view, join_keys):
        event, created = row_version(event, created)
        stamps = []
        for ts in (event, created):
            stamp = Timestamp()
            stamp.FromDatetime(ts)
            stamps.append(stamp.SerializeToString())
        rows.append((
            _redis_key(PROJECT, key, entity_key_serialization_version=3),
            *stamps,
            [values[n].SerializeToString() for n, _, _ in FEATURES],
        ))  # fmt: skip
    return rows


def _platform_bytes(batch: pa.RecordBatch, view: FeatureView, join_keys: dict) -> list[tuple]:
    encoded = redis_encoding.encode(
        batch, view, join_keys, PROJECT, 3, "event_timestamp", "created_timestamp"
    )
    values = list(zip(*encoded.values, strict=True))
    return [
        (key, event, created, list(row_values))
        for key, event, created, row_values in zip(
            encoded.keys, encoded.event_stamps, encoded.created_stamps, values, strict=True
        )
    ]


times = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
doubles = st.one_of(st.none(), st.floats(), st.sampled_from([0.0, -0.0, float("nan")]))
rows = st.fixed_dictionaries({
    "customer_id": st.integers(-(2**63), 2**63 - 1),
    "region": st.text(max_size=5),
    "i64": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-3, 3)),
    "i32": st.integers(-(2**31), 2**31 - 1),
    "f64": doubles,
    "f32": st.one_of(st.none(), st.floats(width=32)),
    "text": st.one_of(st.none(), st.text(max_size=8), st.sampled_from(["", "DE"])),
    "flag": st.booleans(),
    "event_timestamp": times,
    "created_timestamp": st.one_of(st.none(), times),
})  # fmt: skip


def _batch(records: list[dict[str, Any]], join_keys: list[str]) -> pa.RecordBatch:
    fields = [(k, KEYS[k][1]) for k in join_keys]
    fields += [(n, arrow) for n, _, arrow in FEATURES]
    fields += [("event_timestamp", TIME), ("created_timestamp", TIME)]
    schema = pa.schema(fields)
    return pa.RecordBatch.from_pylist(records, schema=schema)


@pytest.mark.parametrize("join_keys", [["customer_id"], ["region"], ["region", "customer_id"]])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=st.lists(rows, min_size=1, max_size=12))
def test_encoding_equals_feasts(join_keys: list[str], records: list[dict[str, Any]]) -> None:
    view = _view(join_keys)
    types = {k: KEYS[k][0] for k in join_keys}
    batch = _batch(records, join_keys)
    assert _platform_bytes(batch, view, types) == _feast_bytes(batch, view, types)


@given(records=st.lists(rows, min_size=1, max_size=12))
@settings(max_examples=20, deadline=None)
def test_integers_with_nulls_take_feasts_path(records: list[dict[str, Any]]) -> None:
    """Feast reads an integer column with nulls as floats; so must the encoding."""
    for record in records:
        record["i64"] = record["i64"] % 2**53  # exact as a float, as Feast reads it
    for record in records[::2]:
        record["i64"] = None
        record["flag"] = None
    view = _view(["customer_id"])
    types = {"customer_id": ValueType.INT64}
    batch = _batch(records, ["customer_id"])
    assert _platform_bytes(batch, view, types) == _feast_bytes(batch, view, types)


def test_strings_differing_after_a_nul_stay_apart() -> None:
    """Distinct strings that share a prefix up to a NUL are distinct values in Redis too."""
    base = {
        "customer_id": 1, "i64": 0, "i32": 0, "f64": 0.0, "f32": 0.0, "flag": True,
        "event_timestamp": datetime(2026, 1, 1, tzinfo=UTC), "created_timestamp": None,
    }  # fmt: skip
    for texts in (["a\x00b", "a\x00c", "\x00", ""], ["a\x00b", "a\x00c", None, "a"]):
        records = [
            {**base, "customer_id": i, "region": t or "", "text": t} for i, t in enumerate(texts)
        ]
        for join_keys in (["customer_id"], ["region"]):
            view = _view(join_keys)
            types = {k: KEYS[k][0] for k in join_keys}
            batch = _batch(records, join_keys)
            assert _platform_bytes(batch, view, types) == _feast_bytes(batch, view, types)
