"""Redis writes that keep each entity's newest row, by event time and then creation time.

Feast's Redis store reads every entity's `_ts:<view>` and skips a row whose event time is
not newer, so a restated value (same event time, later creation time) never replaces the
online one, although the offline join picks it. Here a Lua script compares, atomically
per key, the row's (event time, creation time) with the stored `_ts:<view>` and the
platform's `_created:<view>` field, and writes the row only when it is newer
(`training_rule.row_version`). A hash Feast wrote (no `_created:<view>`) and a row
without a creation time count their event time as their creation time.

One EVALSHA writes a chunk of rows (the field names sent once per chunk), pipelined: one
round trip per batch, where Feast's needs two, and far fewer commands to pack and run
than one per row. A chunk's keys share a hash slot on a Redis Cluster (a script may only
touch one slot); a chunk holds Redis for about half a millisecond.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from itertools import chain
from typing import Any

from feast import FeatureView
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

from feature_platform.feast_seam.conversion import mmh3, redis_key, versioned_view_name
from feature_platform.stores import redis_encoding, redis_scripts
from feature_platform.stores.redis_encoding import EncodedRows
from feature_platform.stores.training_rule import row_version

CREATED_FIELD_PREFIX = "_created:"
# A forgotten entity's hash holds this field alone (`feature-platform forget`): the script
# writes nothing to a hash that has it, so no write brings the entity back.
FORGOTTEN_FIELD = "_forgotten"
# Rows per EVALSHA: large enough to pay the call once for many rows, small enough that
# readers never wait long behind one.
CHUNK_ROWS = 100

# KEYS: the entities' hashes. ARGV: the `_ts` field, the `_created` field, the keys' expiry
# in seconds (0: none), 1 to write without comparing (Feast's `skip_dedup`), the number of
# features n and their n hash fields; then per key: its row's event and creation times in
# epoch microseconds (exact in Lua's doubles until the year 2255), both as serialized
# Timestamps, and its n serialized values. A hash holding FORGOTTEN_FIELD is never
# written. Returns the number of rows written.
WRITE_IF_NEWER = """
local function micros(raw)
  -- a serialized google.protobuf.Timestamp: varint field 1 seconds, field 2 nanos
  if not raw or raw == '' then return nil end
  local fields, i = {}, 1
  while i <= #raw do
    local tag = string.byte(raw, i)
    i = i + 1
    local value, scale, byte = 0, 1, 128
    while byte >= 128 and i <= #raw do
      byte = string.byte(raw, i)
      i = i + 1
      value = value + (byte % 128) * scale
      scale = scale * 128
    end
    fields[tag] = value
  end
  return (fields[8] or 0) * 1000000 + math.floor((fields[16] or 0) / 1000)
end
local ts_field, created_field = ARGV[1], ARGV[2]
local expiry, force, n = tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local hset = {ts_field, '', created_field, ''}
for f = 1, n do hset[3 + 2 * f] = ARGV[5 + f] end
local width, written = 4 + n, 0
for k = 1, #KEYS do
  local at = 5 + n + (k - 1) * width
  local newer = true
  if force then
    newer = redis.call('HEXISTS', KEYS[k], '_forgotten') == 0
  else
    local stored = redis.call('HMGET', KEYS[k], ts_field, created_field, '_forgotten')
    local stored_event = micros(stored[1])
    if stored[3] then
      newer = false
    elseif stored_event then
      local stored_created = micros(stored[2]) or stored_event
      local event, created = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
      newer = event > stored_event or (event == stored_event and created > stored_created)
    end
  end
  if newer then
    hset[2], hset[4] = ARGV[at + 3], ARGV[at + 4]
    for f = 1, n do hset[4 + 2 * f] = ARGV[at + 4 + f] end
    redis.call('HSET', KEYS[k], unpack(hset))
    if expiry > 0 then redis.call('EXPIRE', KEYS[k], expiry) end
    written = written + 1
  end
end
return written
"""


def _chunks(client: Any, keys: Sequence[bytes]) -> list[range] | list[list[int]]:
    """Row indexes per EVALSHA, in order; on a cluster client, one slot per chunk."""
    keyslot = getattr(client, "keyslot", None)
    if keyslot is None:
        return [range(i, min(i + CHUNK_ROWS, len(keys))) for i in range(0, len(keys), CHUNK_ROWS)]
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(keys):
        by_slot.setdefault(keyslot(key), []).append(index)
    return [
        rows[i : i + CHUNK_ROWS]
        for rows in by_slot.values()
        for i in range(0, len(rows), CHUNK_ROWS)
    ]


def script_calls(
    client: Any, config: RepoConfig, table: FeatureView, rows: EncodedRows
) -> list[tuple[list[bytes], list[Any]]]:
    """(KEYS, ARGV) of each WRITE_IF_NEWER call writing `rows`."""
    store = config.online_store
    view = versioned_view_name(table, config)
    header: list[Any] = [
        f"_ts:{view}",
        f"{CREATED_FIELD_PREFIX}{view}",
        store.key_ttl_seconds or 0,
        1 if store.skip_dedup else 0,
        len(rows.features),
        *(mmh3(f"{view}:{name}") for name in rows.features),
    ]
    width = 4 + len(rows.features)
    flat = list(chain.from_iterable(zip(rows.event_micros, rows.created_micros,
        rows.event_stamps, rows.created_stamps, *rows.values, strict=True)))  # fmt: skip
    calls = []
    for chunk in _chunks(client, rows.keys):
        if isinstance(chunk, range):
            keys = rows.keys[chunk.start : chunk.stop]
            args = flat[chunk.start * width : chunk.stop * width]
        else:
            keys = [rows.keys[i] for i in chunk]
            args = [x for i in chunk for x in flat[i * width : (i + 1) * width]]
        calls.append((keys, header + args))
    return calls


def write_encoded(client: Any, config: RepoConfig, table: FeatureView, rows: EncodedRows) -> int:
    """Write the rows newer than what Redis holds; the number written."""
    if not len(rows):
        return 0
    calls = script_calls(client, config, table, rows)
    return sum(redis_scripts.evalsha_all(client, WRITE_IF_NEWER, calls))


def _micros(ts: datetime) -> int:
    stamp = Timestamp()
    stamp.FromDatetime(ts)
    return stamp.seconds * 1_000_000 + stamp.nanos // 1_000


def encode_protos(config: RepoConfig, data: Sequence[Any]) -> list[EncodedRows]:
    """Feast's online rows (entity key, values, event time, creation time) as encoded
    rows, one group per run of rows with the same features."""
    groups: list[EncodedRows] = []
    start = 0
    while start < len(data):
        features = list(data[start][1])
        stop = start + 1
        while stop < len(data) and list(data[stop][1]) == features:
            stop += 1
        rows = data[start:stop]
        versions = [row_version(event, created) for _, _, event, created in rows]
        version = config.entity_key_serialization_version
        keys = [redis_key(config.project, row[0], entity_key_serialization_version=version)
                for row in rows]  # fmt: skip
        groups.append(
            redis_encoding.from_protos(
                rows,
                features,
                keys=keys,
                event_micros=[_micros(event) for event, _ in versions],
                created_micros=[_micros(created) for _, created in versions],
            )
        )
        start = stop
    return groups


def write_newer(client: Any, config: RepoConfig, table: FeatureView, data: Sequence[Any]) -> int:
    """`write_encoded` for rows Feast converted (pushes, Feast's materialization)."""
    return sum(write_encoded(client, config, table, rows) for rows in encode_protos(config, data))


async def write_newer_async(
    client: Any, config: RepoConfig, table: FeatureView, data: Sequence[Any]
) -> int:
    """`write_newer` on Feast's async client (the feature server's /push)."""
    written = 0
    for rows in encode_protos(config, data):
        calls = script_calls(client, config, table, rows)
        written += sum(await redis_scripts.evalsha_all_async(client, WRITE_IF_NEWER, calls))
    return written
