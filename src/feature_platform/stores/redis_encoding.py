"""The bytes Feast's Redis store writes for a batch of offline rows, computed per column.

Feast converts an Arrow batch to one protobuf per value and per entity key
(`feast.utils._convert_arrow_to_proto`), then serializes each of them again row by row:
about two thirds of a materialization's time. Here each column becomes its list of
serialized values at once: fixed-width values (doubles, floats, integer entity keys) by
numpy, the others by serializing each distinct value once with protobuf itself. The bytes
are Feast's, byte for byte (tests/unit/stores/test_redis_encoding.py compares them with Feast's
conversion over generated values): an empty `Value` for a null or NaN, the oneof field
with its tag otherwise, keys as `serialize_entity_key` version 3 plus the project.

A column or key of any other type, and an integer column with nulls (Feast reads it as
floats), goes through Feast's own conversion.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast import FeatureView
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feature_platform.feast_seam.conversion import build_entity_keys, redis_key

# Value's oneof fields, as (field number << 3) | wire type: 1 is 64-bit, 5 is 32-bit.
DOUBLE_TAG = (5 << 3) | 1
FLOAT_TAG = (6 << 3) | 5
EMPTY = b""


@dataclass(frozen=True)
class EncodedRows:
    """One batch as the Redis write needs it: per row its hash key, its event and creation
    times in epoch microseconds and as serialized Timestamps, and per feature (in the
    view's order) its serialized Value."""

    keys: list[bytes]
    event_micros: list[int]
    created_micros: list[int]
    event_stamps: list[bytes]
    created_stamps: list[bytes]
    features: list[str]
    values: list[list[bytes]]

    def __len__(self) -> int:
        return len(self.keys)


def _fixed_width(tag: bytes, column: np.ndarray, dtype: str) -> list[bytes]:
    """`tag` followed by each value's little-endian bytes, one bytes object per value."""
    width = len(tag) + np.dtype(dtype).itemsize
    out = np.empty((len(column), width), dtype=np.uint8)
    out[:, : len(tag)] = np.frombuffer(tag, dtype=np.uint8)
    out[:, len(tag) :] = column.astype(dtype).view(np.uint8).reshape(len(column), -1)
    buffer = out.tobytes()
    return [buffer[i : i + width] for i in range(0, len(buffer), width)]


def _by_distinct(values: np.ndarray, encode: Callable[[Any], bytes]) -> list[bytes]:
    """`encode` each distinct value once; a null (code -1) is the empty Value."""
    codes, distinct = pd.factorize(values, use_na_sentinel=True)
    table = np.array([encode(v) for v in distinct] + [EMPTY], dtype=object)
    return list(table[codes])


def _strings(column: pa.Array) -> list[bytes]:
    """Each distinct string encoded once. Arrow compares strings as bytes; pandas' factorize
    compares them as C strings, which ends them at a NUL ('a\\x00b' == 'a\\x00c')."""
    encoded = column.dictionary_encode()
    table = [ValueProto(string_val=v).SerializeToString() for v in encoded.dictionary.to_pylist()]
    codes = encoded.indices.fill_null(len(table)).to_numpy(zero_copy_only=False)
    return list(np.array([*table, EMPTY], dtype=object)[codes])


def _float_values(column: pa.Array, tag: int, dtype: str) -> list[bytes]:
    numbers = column.to_numpy(zero_copy_only=False)
    out = _fixed_width(bytes([tag]), numbers, dtype)
    # Feast writes a null or NaN as an empty Value.
    for i in np.flatnonzero(np.isnan(numbers)):
        out[i] = EMPTY
    return out


def _values(column: pa.Array, value_type: ValueType) -> list[bytes]:
    """Each value of `column` serialized as Feast's Redis store writes it."""
    kind = column.type
    has_nulls = column.null_count > 0
    if value_type == ValueType.DOUBLE and pa.types.is_float64(kind):
        return _float_values(column, DOUBLE_TAG, "<f8")
    if value_type == ValueType.FLOAT and pa.types.is_float32(kind):
        return _float_values(column, FLOAT_TAG, "<f4")
    if value_type == ValueType.INT64 and pa.types.is_integer(kind) and not has_nulls:
        numbers = column.to_numpy(zero_copy_only=False)
        return _by_distinct(numbers, lambda v: ValueProto(int64_val=int(v)).SerializeToString())
    if value_type == ValueType.INT32 and pa.types.is_int32(kind) and not has_nulls:
        numbers = column.to_numpy(zero_copy_only=False)
        return _by_distinct(numbers, lambda v: ValueProto(int32_val=int(v)).SerializeToString())
    if value_type == ValueType.STRING and (
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        return _strings(column)
    if value_type == ValueType.BOOL and pa.types.is_boolean(kind) and not has_nulls:
        flags = column.to_numpy(zero_copy_only=False)
        return _by_distinct(flags, lambda v: ValueProto(bool_val=bool(v)).SerializeToString())
    # Anything else: Feast's conversion, on the same input Feast gives it.
    protos = python_values_to_proto_values(column.to_numpy(zero_copy_only=False), value_type)
    return [proto.SerializeToString() for proto in protos]


# serialize_entity_key v3 writes each join key's value as <type><length><bytes>.
_KEY_INTEGERS = {ValueType.INT64: "<i8", ValueType.INT32: "<i4"}


def _key_segments(column: pa.Array, value_type: ValueType) -> list[bytes] | None:
    kind = column.type
    if column.null_count:
        return None
    dtype = _KEY_INTEGERS.get(value_type)
    if dtype and pa.types.is_integer(kind):
        numbers = column.to_numpy(zero_copy_only=False)
        if value_type == ValueType.INT32 and not pa.types.is_int32(kind):
            return None  # Feast would range-check the narrowing
        size = np.dtype(dtype).itemsize
        return _fixed_width(struct.pack("<II", value_type.value, size), numbers, dtype)
    if value_type == ValueType.STRING and (
        pa.types.is_string(kind) or pa.types.is_large_string(kind)
    ):
        texts = column.to_pylist()
        encoded = [text.encode("utf8") for text in texts]
        return [struct.pack("<II", ValueType.STRING.value, len(b)) + b for b in encoded]
    return None


def entity_keys(
    batch: pa.RecordBatch, join_keys: Mapping[str, ValueType], project: str, version: int
) -> list[bytes]:
    """Each row's Redis key: `serialize_entity_key` of its join keys, then the project."""
    names = sorted(join_keys)  # Feast sorts several join keys by name
    segments = [_key_segments(batch.column(name), join_keys[name]) for name in names]
    fast = [segment for segment in segments if segment is not None]
    if version == 3 and len(fast) == len(names):
        head = struct.pack("<I", len(names)) + b"".join(
            struct.pack("<II", ValueType.STRING.value, len(n.encode())) + n.encode() for n in names
        )
        tail = project.encode()
        if len(fast) == 1:
            return [head + segment + tail for segment in fast[0]]
        return [head + b"".join(parts) + tail for parts in zip(*fast, strict=True)]
    key_values = {
        name: python_values_to_proto_values(
            batch.column(name).to_numpy(zero_copy_only=False), value_type
        )
        for name, value_type in join_keys.items()
    }
    protos = build_entity_keys(batch.num_rows, dict(join_keys), key_values)
    return [redis_key(project, key, entity_key_serialization_version=version) for key in protos]


def _micros(column: pa.Array) -> np.ndarray:
    """Epoch microseconds, rounded down as Feast's conversion to datetime does."""
    if not pa.types.is_timestamp(column.type):
        column = pa.array(pd.to_datetime(column.to_numpy(zero_copy_only=False), utc=True))
    unit = column.type.unit
    ticks = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    if unit == "ns":
        return np.floor_divide(ticks, 1000)
    return ticks * {"s": 1_000_000, "ms": 1000, "us": 1}[unit]


def _stamp(micros: int) -> bytes:
    seconds, micro = divmod(int(micros), 1_000_000)
    return Timestamp(seconds=seconds, nanos=micro * 1000).SerializeToString()


def stamps(micros: np.ndarray) -> list[bytes]:
    """Serialized google.protobuf.Timestamps, each distinct time serialized once."""
    return _by_distinct(micros, _stamp)


def encode(
    batch: pa.RecordBatch,
    view: FeatureView,
    join_keys: Mapping[str, ValueType],
    project: str,
    version: int,
    timestamp: str,
    created: str | None,
) -> EncodedRows:
    """The batch's rows (its columns named as the view names them) ready to write.

    A row without a creation time counts its event time as its creation time
    (`training_rule.row_version`)."""
    event = _micros(batch.column(timestamp))
    if created:
        created_column = batch.column(created)
        created_micros = _micros(created_column)
        if created_column.null_count:
            missing = created_column.is_null().to_numpy(zero_copy_only=False)
            created_micros = np.where(missing, event, created_micros)
    else:
        created_micros = event
    features = [feature.name for feature in view.features]
    return EncodedRows(
        keys=entity_keys(batch, join_keys, project, version),
        event_micros=event.tolist(),
        created_micros=created_micros.tolist(),
        event_stamps=stamps(event),
        created_stamps=stamps(created_micros),
        features=features,
        values=[
            _values(batch.column(feature.name), feature.dtype.to_value_type())
            for feature in view.features
        ],
    )


def from_protos(
    rows: Sequence[tuple[Any, Mapping[str, ValueProto], Any, Any]],
    features: list[str],
    keys: list[bytes],
    event_micros: list[int],
    created_micros: list[int],
) -> EncodedRows:
    """Rows Feast already converted (pushes, Feast's materialization) in the same shape."""
    return EncodedRows(
        keys=keys,
        event_micros=event_micros,
        created_micros=created_micros,
        event_stamps=[_stamp(m) for m in event_micros],
        created_stamps=[_stamp(m) for m in created_micros],
        features=features,
        values=[[row[1][name].SerializeToString() for row in rows] for name in features],
    )
