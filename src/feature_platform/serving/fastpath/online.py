"""The hot path: /get-online-features from Redis, one round trip, Feast's exact answer.

The response has Feast's JSON shape, values, statuses and timestamps (tests compare it
with Feast's own for the same requests). What differs is the work per request: the
plan comes from a cache, every view's rows come back in one pipelined HMGET batch on an
async connection bounded by a deadline (on a cluster: one batch per node, all at once),
and the JSON is encoded once with orjson.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Mapping
from itertools import repeat
from typing import Any

import redis.asyncio as aioredis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.transformation.python_transformation import PythonTransformation
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import NoScriptError

from feature_platform.errors import HTTPError, PlatformError, bad_request, unavailable
from feature_platform.serving.errors import store_timed_out
from feature_platform.serving.fastpath.plans import JOIN_KEY_TYPES, KeyGroup, OdfvPlan, ReadPlan
from feature_platform.serving.fastpath.redis_clients import AsyncRedis, pipelined_connection
from feature_platform.serving.fastpath.redis_pipeline import PipelinedConnection
from feature_platform.stores.online_ttl import is_expired

EPOCH = "1970-01-01T00:00:00Z"
PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
_SCALAR_KINDS = {"int64_val", "int32_val", "double_val", "string_val", "bool_val"}


# Every view's HMGETs in one script call: one command per request instead of one per
# entity (most of the client-side cost of a 100-entity read) or per view. ARGV: the view
# count, then per view its key count, its field count and its fields; KEYS in that order.
READ_VIEWS = """
local out = {}
local k = 1
local a = 2
for v = 1, tonumber(ARGV[1]) do
  local n_keys = tonumber(ARGV[a])
  local n_fields = tonumber(ARGV[a + 1])
  local fields = {unpack(ARGV, a + 2, a + 1 + n_fields)}
  local rows = {}
  for i = 1, n_keys do
    rows[i] = redis.call('HMGET', KEYS[k], unpack(fields))
    k = k + 1
  end
  out[v] = rows
  a = a + 2 + n_fields
end
return out
"""
READ_VIEWS_SHA = hashlib.sha1(READ_VIEWS.encode()).hexdigest()


class Fallback(PlatformError):
    """A stored value this path does not decode; Feast's path serves the request."""


def entity_columns(
    entities: Any, plan: ReadPlan, max_entities: int
) -> tuple[dict[str, list[Any]], int]:
    """The request's entity columns, checked: keys present, lengths equal, types right."""
    if not isinstance(entities, dict) or not entities:
        raise bad_request("'entities' must be a non-empty object of column lists")
    lengths = set()
    for name, column in entities.items():
        if not isinstance(column, list):
            raise bad_request(f"entities.{name} must be a list")
        lengths.add(len(column))
    if len(lengths) > 1:
        raise bad_request(f"entity columns differ in length: {sorted(lengths)}")
    n_rows = lengths.pop()
    if n_rows == 0:
        raise bad_request("entity columns are empty")
    if n_rows > max_entities:
        raise HTTPError(413, "too many entities", f"{n_rows} rows, at most {max_entities}")
    for name, value_type in plan.join_key_types.items():
        if name not in entities:
            raise bad_request(f"missing join key {name!r}")
        _check_column(name, entities[name], JOIN_KEY_TYPES[value_type])
    for name, value_type in plan.request_types.items():
        if name not in entities:
            raise bad_request(f"missing request data {name!r}")
        if value_type == ValueType.DOUBLE or value_type == ValueType.FLOAT:
            _check_column(name, entities[name], float)
    return entities, n_rows


def _check_column(name: str, column: list[Any], kind: type) -> None:
    types = set(map(type, column))
    if types <= ({int, float} if kind is float else {kind}) and _finite(column, kind):
        return
    for i, value in enumerate(column):
        if not _is_of(value, kind):
            raise bad_request(f"entities.{name}[{i}] = {value!r} is not of type {kind.__name__}")


def _finite(column: list[Any], kind: type) -> bool:
    """True when no number in the column is inf or NaN (a column of non-floats: True)."""
    if kind is not float:
        return True
    try:
        return math.isfinite(math.fsum(column))
    except OverflowError:  # an int too large for a double, or a sum past the largest
        return all(_is_of(v, float) for v in column)
    except ValueError:  # fsum of inf and -inf
        return False


def _is_of(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if kind is not float:
        return isinstance(value, kind)
    try:
        return isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an int too large for a double
        return False


def _entity_key(
    join_keys: list[str], values: tuple[Any, ...], types: Mapping[str, ValueType]
) -> EntityKeyProto:
    protos = []
    for key, value in zip(join_keys, values, strict=True):
        kind = types[key]
        if kind == ValueType.STRING:
            protos.append(ValueProto(string_val=value))
        elif kind == ValueType.INT32:
            protos.append(ValueProto(int32_val=value))
        else:
            protos.append(ValueProto(int64_val=value))
    return EntityKeyProto(join_keys=join_keys, entity_values=protos)


class OnlineReader:
    """Reads a plan's features for a batch of entity rows from Redis."""

    def __init__(
        self, client: AsyncRedis, project: str, key_version: int, timeout_s: float
    ) -> None:
        self.client = client
        self.project = project.encode()
        self.key_version = key_version
        self.timeout_s = timeout_s
        self._cluster = isinstance(client, aioredis.RedisCluster)
        # one Redis server: reads share one pipelined connection (redis_pipeline.py)
        self._commands: AsyncRedis | PipelinedConnection = pipelined_connection(client) or client
        # Bounded caches of work that repeats across requests: hot entities, and the
        # few distinct write timestamps a materialization produces.
        self._ts_json: dict[bytes, tuple[str, float]] = {}
        self._keys: dict[tuple[str, ...], dict[Any, bytes]] = {}

    def _keys_of(
        self, group: KeyGroup, entities: dict[str, list[Any]], plan: ReadPlan
    ) -> tuple[list[bytes], list[int] | None]:
        """The group's unique Redis keys, and for each request row the index of its key
        (None when every row has its own key, in order)."""
        cache = self._keys.get(tuple(group.join_keys))
        if cache is None or len(cache) > 200_000:
            cache = self._keys[tuple(group.join_keys)] = {}
        # one join key: its values are the cache keys; several: tuples of them
        rows: list[Any] = (
            entities[group.join_keys[0]]
            if len(group.join_keys) == 1
            else list(zip(*(entities[k] for k in group.join_keys), strict=True))
        )
        keys: list[Any] = list(map(cache.get, rows))
        if None in keys:
            for i, row in enumerate(rows):
                if keys[i] is None:
                    values = (row,) if len(group.join_keys) == 1 else row
                    proto = _entity_key(group.join_keys, values, plan.join_key_types)
                    keys[i] = cache[row] = (
                        serialize_entity_key(proto, self.key_version) + self.project
                    )
        if len(set(rows)) == len(rows):
            return keys, None
        index: dict[Any, int] = {}
        unique: list[bytes] = []
        slots = []
        for row, key in zip(rows, keys, strict=True):
            slot = index.get(row)
            if slot is None:
                slot = index[row] = len(unique)
                unique.append(key)
            slots.append(slot)
        return unique, slots

    def _timestamp(self, raw: bytes) -> tuple[str, float]:
        cached = self._ts_json.get(raw)
        if cached is None:
            ts = Timestamp()
            ts.ParseFromString(raw)
            cached = (ts.ToJsonString(), ts.seconds + ts.nanos / 1e9)
            if len(self._ts_json) > 100_000:
                self._ts_json.clear()
            self._ts_json[raw] = cached
        return cached

    async def _fetch(self, batches: list[tuple[KeyGroup, list[bytes]]]) -> list[Any]:
        """Per key group, the HMGET reply of each of its keys, in one round trip (per
        node)."""
        if self._cluster:
            # A script may touch the keys of one slot only, and Feast's keys carry no
            # hash tag, so a view's keys spread over every slot: one HMGET per key, which
            # redis-py sends as one pipeline per node, all nodes at once.
            async with self.client.pipeline(transaction=False) as cluster_pipe:
                for group, keys in batches:
                    for key in keys:
                        cluster_pipe.hmget(key, group.fields)  # type: ignore[arg-type]
                replies = iter(await cluster_pipe.execute())
            return [[next(replies) for _ in keys] for _, keys in batches]
        args: list[Any] = [len(batches)]
        keys_in_order: list[bytes] = []
        for group, keys in batches:
            args += [len(keys), len(group.fields), *group.fields]
            keys_in_order += keys
        command = ("EVALSHA", READ_VIEWS_SHA, len(keys_in_order), *keys_in_order, *args)
        try:
            return list(await self._commands.execute_command(*command))
        except NoScriptError:
            # a restarted or flushed Redis: load the script once, then it is cached again
            await self._commands.script_load(READ_VIEWS)
            return list(await self._commands.execute_command(*command))

    async def read(
        self, plan: ReadPlan, entities: dict[str, list[Any]], n_rows: int
    ) -> tuple[dict[str, Any], dict[str, float], float]:
        """Feast's response dict, the newest event time per view, and the store read time."""
        batches = []
        slots_of = []
        for group in plan.groups:
            keys, slots = self._keys_of(group, entities, plan)
            batches.append((group, keys))
            slots_of.append(slots)

        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                per_group = await self._fetch(batches)
        except TimeoutError:
            raise store_timed_out(self.timeout_s) from None
        except (aioredis.RedisError, OSError) as exc:
            raise unavailable(f"online store error: {type(exc).__name__}") from None
        read_s = time.perf_counter() - started

        present = [PRESENT] * n_rows
        epochs = [EPOCH] * n_rows
        columns: dict[str, tuple[list[Any], list[str], list[str]]] = {}
        newest: dict[str, float] = {}
        now_s = time.time()
        for (group, _keys), slots, replies in zip(batches, slots_of, per_group, strict=True):
            for view, offset in zip(group.views, group.offsets, strict=True):
                n_features = len(view.features)
                # Per stored row: status and timestamp, and whether its values are served.
                statuses = []
                timestamps = []
                withheld = []
                for j, reply in enumerate(replies):
                    raw_ts = reply[offset + n_features]
                    if not raw_ts:
                        statuses.append(NOT_FOUND)
                        timestamps.append(EPOCH)
                        withheld.append(j)
                        continue
                    ts_json, ts_s = self._timestamp(raw_ts)
                    if ts_s > newest.get(view.name, 0.0):
                        newest[view.name] = ts_s
                    timestamps.append(ts_json)
                    if is_expired(ts_s, view.ttl_s, now_s):
                        statuses.append(OUTSIDE_MAX_AGE)
                        withheld.append(j)
                    else:
                        statuses.append(PRESENT)
                if slots is not None:
                    statuses = [statuses[s] for s in slots]
                    timestamps = [timestamps[s] for s in slots]
                for i, feature in enumerate(view.features):
                    values = _decode_column([reply[offset + i] for reply in replies])
                    for j in withheld:
                        values[j] = None
                    if slots is not None:
                        values = [values[s] for s in slots]
                    columns[feature] = (values, statuses, timestamps)

        names: list[str] = list(plan.join_key_types)
        results: list[dict[str, Any]] = [
            {"values": list(entities[k]), "statuses": present, "event_timestamps": epochs}
            for k in plan.join_key_types
        ]
        for view in plan.views:
            for feature in view.features:
                values, statuses, timestamps = columns[feature]
                names.append(feature)
                results.append(
                    {"values": values, "statuses": statuses, "event_timestamps": timestamps}
                )

        for odfv in plan.odfvs:
            inputs: dict[str, list[Any]] = {k: entities[k] for k in plan.join_key_types}
            for name, value_type in plan.request_types.items():
                column = entities[name]
                is_double = value_type == ValueType.DOUBLE
                inputs[name] = [float(v) for v in column] if is_double else column
            for source in odfv.sources:
                for view in plan.views:
                    if view.name == source:
                        for feature in view.features:
                            inputs[feature] = columns[feature][0]
            outputs = _transform(odfv, inputs)
            for feature in odfv.features:
                column = outputs[feature]
                names.append(feature)
                results.append(
                    {
                        "values": _served_values(
                            column if isinstance(column, list) else [column],
                            odfv.value_types[feature],
                        ),
                        "statuses": present,
                        "event_timestamps": epochs,
                    }
                )

        return {"results": results, "metadata": {"feature_names": names}}, newest, read_s


def _transform(odfv: OdfvPlan, inputs: dict[str, list[Any]]) -> dict[str, Any]:
    """The view's function on its inputs, as Feast's `transform_dict` calls it for a
    python-mode view, without its per-call type checks (a third of a 1-entity read).
    Inputs are passed under both short and full (`view__feature`) names, as Feast does."""
    view = odfv.view
    transformation = view.feature_transformation
    if view.singleton or not isinstance(transformation, PythonTransformation):
        return view.transform_dict(inputs)
    aliased = dict(inputs)
    for projection in view.source_feature_view_projections.values():
        for field in projection.features:
            if field.name in inputs:
                aliased[f"{projection.name}__{field.name}"] = inputs[field.name]
    return transformation.udf(aliased)


# The Python type each scalar value type leaves Feast's proto conversion as; a value of
# exactly that type converts to itself, so it needs no round trip through a proto.
_SERVED_AS = {
    ValueType.INT64: int,
    ValueType.DOUBLE: float,
    ValueType.STRING: str,
    ValueType.BOOL: bool,
}


def _served_values(column: list[Any], value_type: ValueType) -> list[Any]:
    """An on-demand feature's values as Feast serves them (through its proto types)."""
    kind = _SERVED_AS.get(value_type)
    if kind is not None and set(map(type, column)) <= {kind, type(None)}:
        values = [v for v in column if v is not None]
        # Feast's conversion serves NaN as null and refuses an int outside int64
        if _finite(values, kind) and (kind is not int or _within_int64(values)):
            return column
    return [_decode_proto(p) for p in python_values_to_proto_values(column, value_type)]


def _within_int64(values: list[int]) -> bool:
    return not values or (min(values) >= -(2**63) and max(values) < 2**63)


# Stored values repeat (categories, counts, ratings): decode each distinct one once.
# An absent field (None) and an empty value are null.
_SEEDS: dict[bytes | None, Any] = {None: None, b"": None}
_decoded: dict[bytes | None, Any] = dict(_SEEDS)
_MISSING = object()


def _decode_column(raws: list[bytes | None]) -> list[Any]:
    values = list(map(_decoded.get, raws, repeat(_MISSING)))
    if _MISSING in values:
        if len(_decoded) > 500_000:
            _decoded.clear()
            _decoded.update(_SEEDS)
        for j, raw in enumerate(raws):
            if values[j] is _MISSING:
                assert raw is not None
                proto = ValueProto()
                proto.ParseFromString(raw)
                values[j] = _decoded[raw] = _decode_proto(proto)
    return values


def _decode_proto(value: ValueProto) -> Any:
    kind = value.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    if kind not in _SCALAR_KINDS:
        raise Fallback(kind)
    result = getattr(value, kind)
    if kind == "double_val" and not math.isfinite(result):
        raise Fallback("non-finite double")
    return result
