"""The hot path: /get-online-features from Redis, one round trip, Feast's exact answer.

The response has Feast's JSON shape, values, statuses and timestamps (tests compare it
with Feast's own for the same requests). What differs is the work per request: the
plan comes from a cache, every view's rows come back in one pipelined HMGET batch on an
async connection bounded by a deadline (on a cluster: one batch per node, all at once),
and the JSON is encoded once with orjson.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feature_platform.serving.errors import HTTPError, bad_request, store_timed_out, unavailable
from feature_platform.serving.plans import JOIN_KEY_TYPES, ReadPlan
from feature_platform.serving.redis_clients import AsyncRedis
from feature_platform.stores.online_ttl import is_expired

EPOCH = "1970-01-01T00:00:00Z"
PRESENT = "PRESENT"
NOT_FOUND = "NOT_FOUND"
OUTSIDE_MAX_AGE = "OUTSIDE_MAX_AGE"
_SCALAR_KINDS = {"int64_val", "int32_val", "double_val", "string_val", "bool_val"}


# One HMGET per key, run inside Redis: one command per view instead of one per entity,
# which is most of the client-side cost of a 100-entity read.
HMGET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, unpack(ARGV))
end
return out
"""


class Fallback(Exception):
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
    for i, value in enumerate(column):
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if kind is float
            else isinstance(value, kind) and not isinstance(value, bool)
        )
        if not ok:
            raise bad_request(f"entities.{name}[{i}] = {value!r} is not of type {kind.__name__}")


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
        self._hmget_many = (
            None
            if isinstance(client, aioredis.RedisCluster)
            else client.register_script(HMGET_MANY)
        )
        # Bounded caches of work that repeats across requests: hot entities, and the
        # few distinct write timestamps a materialization produces.
        self._ts_json: dict[bytes, tuple[str, float]] = {}
        self._keys: dict[tuple[tuple[str, ...], tuple[Any, ...]], bytes] = {}

    def _redis_key(self, join_keys: list[str], values: tuple[Any, ...], plan: ReadPlan) -> bytes:
        cache_key = (tuple(join_keys), values)
        key = self._keys.get(cache_key)
        if key is None:
            proto = _entity_key(join_keys, values, plan.join_key_types)
            key = serialize_entity_key(proto, self.key_version) + self.project
            if len(self._keys) > 200_000:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

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

    async def _fetch(self, batches: list[tuple[Any, list[bytes], list[int]]]) -> list[Any]:
        """Per view, the HMGET reply of each of its keys, in one round trip (per node)."""
        if isinstance(self.client, aioredis.RedisCluster):
            # A script may touch the keys of one slot only, and Feast's keys carry no
            # hash tag, so a view's keys spread over every slot: one HMGET per key, which
            # redis-py sends as one pipeline per node, all nodes at once.
            async with self.client.pipeline(transaction=False) as cluster_pipe:
                for view, keys, _ in batches:
                    for key in keys:
                        cluster_pipe.hmget(key, view.fields)  # type: ignore[arg-type]
                replies = iter(await cluster_pipe.execute())
            return [[next(replies) for _ in keys] for _, keys, _ in batches]
        assert self._hmget_many is not None
        async with self.client.pipeline(transaction=False) as pipe:
            for view, keys, _ in batches:
                await self._hmget_many(keys=keys, args=view.fields, client=pipe)
            return list(await pipe.execute())

    async def read(
        self, plan: ReadPlan, entities: dict[str, list[Any]], n_rows: int
    ) -> tuple[dict[str, Any], dict[str, float], float]:
        """Feast's response dict, the newest event time per view, and the store read time."""
        # Unique Redis keys per view, and where each request row finds its key.
        batches = []
        for view in plan.views:
            columns = [entities[k] for k in view.join_keys]
            index: dict[tuple[Any, ...], int] = {}
            row_slots = []
            keys: list[bytes] = []
            for key_values in zip(*columns, strict=True):
                slot = index.get(key_values)
                if slot is None:
                    slot = index[key_values] = len(keys)
                    keys.append(self._redis_key(view.join_keys, key_values, plan))
                row_slots.append(slot)
            batches.append((view, keys, row_slots))

        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                per_view = await self._fetch(batches)
        except TimeoutError:
            raise store_timed_out(self.timeout_s) from None
        except (aioredis.RedisError, OSError) as exc:
            raise unavailable(f"online store error: {type(exc).__name__}") from None
        read_s = time.perf_counter() - started

        names: list[str] = []
        results: list[dict[str, Any]] = []
        present = [PRESENT] * n_rows
        epochs = [EPOCH] * n_rows
        for join_key in plan.join_key_types:
            names.append(join_key)
            results.append(
                {
                    "values": list(entities[join_key]),
                    "statuses": present,
                    "event_timestamps": epochs,
                }
            )

        newest: dict[str, float] = {}
        columns_by_name: dict[str, list[Any]] = {}
        now_s = time.time()
        for (view, _keys, row_slots), view_replies in zip(batches, per_view, strict=True):
            n_features = len(view.features)
            # Per stored row: its values (None when withheld), status and timestamp.
            decoded: list[tuple[list[Any] | None, str, str]] = []
            for reply in view_replies:
                raw_ts = reply[n_features]
                if not raw_ts:
                    decoded.append((None, NOT_FOUND, EPOCH))
                    continue
                ts_json, ts_s = self._timestamp(raw_ts)
                newest[view.name] = max(newest.get(view.name, 0.0), ts_s)
                if is_expired(ts_s, view.ttl_s, now_s):
                    decoded.append((None, OUTSIDE_MAX_AGE, ts_json))
                    continue
                values = [_decode(raw) for raw in reply[:n_features]]
                decoded.append((values, PRESENT, ts_json))
            timestamps = [decoded[slot][2] for slot in row_slots]
            statuses = [decoded[slot][1] for slot in row_slots]
            for i, feature in enumerate(view.features):
                feature_values = [
                    None if (row := decoded[slot][0]) is None else row[i] for slot in row_slots
                ]
                columns_by_name[feature] = feature_values
                names.append(feature)
                results.append(
                    {"values": feature_values, "statuses": statuses, "event_timestamps": timestamps}
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
                            inputs[feature] = columns_by_name[feature]
            outputs = odfv.view.transform_dict(inputs)
            for feature in odfv.features:
                column = outputs[feature]
                protos = python_values_to_proto_values(
                    column if isinstance(column, list) else [column], odfv.value_types[feature]
                )
                names.append(feature)
                results.append(
                    {
                        "values": [_decode_proto(p) for p in protos],
                        "statuses": present,
                        "event_timestamps": epochs,
                    }
                )

        return {"results": results, "metadata": {"feature_names": names}}, newest, read_s


# Stored values repeat (categories, counts, ratings): decode each distinct one once.
_decoded: dict[bytes, Any] = {}


def _decode(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return _decoded[raw]
    except KeyError:
        pass
    value = ValueProto()
    value.ParseFromString(raw)
    result = _decode_proto(value)
    if len(_decoded) > 500_000:
        _decoded.clear()
    _decoded[raw] = result
    return result


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
