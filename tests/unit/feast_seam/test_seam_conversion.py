"""conversion.*: the bytes and rows Feast's own stores write, computed by its helpers."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.types import Int64
from seam_helpers import assert_params, repo_config

# serialize_entity_key version 3 of customer_id=1 (count, names, then typed values),
# then the project.
CUSTOMER_1_IN_SEAM = (
    b"\x01\x00\x00\x00"
    b"\x02\x00\x00\x00\x0b\x00\x00\x00customer_id"
    b"\x04\x00\x00\x00\x08\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00"
    b"seam"
)
CUSTOMER_1 = EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=1)])


@pytest.mark.seam("conversion.redis_key")
def test_redis_key_is_the_serialized_key_then_the_project(conversion: ModuleType) -> None:
    assert_params(conversion.redis_key, "project, entity_key, entity_key_serialization_version")
    key = conversion.redis_key("seam", CUSTOMER_1, entity_key_serialization_version=3)
    assert key == CUSTOMER_1_IN_SEAM


@pytest.mark.seam("conversion.mmh3")
def test_mmh3_is_the_hash_field_of_a_feature(conversion: ModuleType) -> None:
    from feast.infra.online_stores import helpers

    assert_params(conversion.mmh3, "key")
    # Feast's function itself: the feature server's request path calls it, at no extra cost
    assert conversion.mmh3 is helpers._mmh3
    assert conversion.mmh3("counts:n") == b"07\xe4\xe6"


@pytest.mark.seam("conversion.build_entity_keys")
def test_build_entity_keys_makes_one_key_per_row(conversion: ModuleType) -> None:
    assert_params(conversion.build_entity_keys, "num_rows, join_keys, proto_values")
    keys = conversion.build_entity_keys(
        2,
        {"customer_id": ValueType.INT64},
        {"customer_id": [Value(int64_val=1), Value(int64_val=2)]},
    )
    assert keys == [
        CUSTOMER_1,
        EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=2)]),
    ]


def _view(source: FileSource) -> tuple[FeatureView, Entity]:
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    view = FeatureView(
        name="counts",
        entities=[customer],
        schema=[Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)],
        source=source,
    )
    return view, customer


@pytest.mark.seam("conversion.versioned_view_name")
def test_the_view_name_is_unversioned_without_versioning(
    conversion: ModuleType, tmp_path: Path
) -> None:
    assert_params(conversion.versioned_view_name, "table, config")
    view, _ = _view(FileSource(path="unused.parquet", timestamp_field="event_timestamp"))
    config = repo_config(tmp_path)
    assert not config.registry.enable_online_feature_view_versioning
    assert conversion.versioned_view_name(view, config) == "counts"


@pytest.mark.seam("conversion.column_names")
def test_column_names_are_the_source_names_in_order(conversion: ModuleType) -> None:
    assert_params(conversion.column_names, "feature_view, entities")
    view, customer = _view(
        FileSource(
            path="unused.parquet",
            timestamp_field="ts_src",
            created_timestamp_column="created_src",
            field_mapping={"n_src": "n", "cid": "customer_id"},
        )
    )
    assert conversion.column_names(view, [customer]) == (
        ["cid"],
        ["n_src"],
        "ts_src",
        "created_src",
    )


@pytest.mark.seam("conversion.arrow_to_proto")
def test_arrow_rows_become_key_values_and_times(conversion: ModuleType) -> None:
    assert_params(conversion.arrow_to_proto, "table, feature_view, join_keys")
    view, _ = _view(
        FileSource(
            path="unused.parquet", timestamp_field="event_timestamp", created_timestamp_column="c"
        )
    )
    at = datetime(2026, 3, 1, tzinfo=UTC)
    batch = pa.RecordBatch.from_pydict(
        {"customer_id": [1], "n": [7], "event_timestamp": [at], "c": [at]}
    )
    rows: list[Any] = conversion.arrow_to_proto(batch, view, {"customer_id": ValueType.INT64})
    assert rows == [
        (CUSTOMER_1, {"n": Value(int64_val=7)}, at.replace(tzinfo=None), at.replace(tzinfo=None))
    ]
