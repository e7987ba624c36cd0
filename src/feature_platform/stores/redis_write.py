"""Redis writes that keep each entity's newest row, by event time and then creation time.

Feast's Redis store reads every entity's `_ts:<view>` and skips a row whose event time is
not newer, so a restated value (same event time, later creation time) never replaces the
online one, although the offline join picks it. Here a Lua script compares, atomically
per key, the row's (event time, creation time) with the stored `_ts:<view>` and the
platform's `_created:<view>` field, and writes the row only when it is newer
(`training_rule.row_version`). A hash Feast wrote (no `_created:<view>`) and a row
without a creation time count their event time as their creation time. One EVALSHA per
row, pipelined: one round trip per batch, where Feast's needs two.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from feast import FeatureView
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.repo_config import RepoConfig
from google.protobuf.timestamp_pb2 import Timestamp

from feature_platform.stores import redis_scripts
from feature_platform.stores.training_rule import row_version

CREATED_FIELD_PREFIX = "_created:"

# KEYS[1] the entity's hash. ARGV: the `_ts` field, the `_created` field, the row's event
# and creation times in epoch microseconds (exact in Lua's doubles until the year 2255),
# both as serialized Timestamps, the key's expiry in seconds (0: none), 1 to write
# without comparing (Feast's `skip_dedup`), then feature field/value pairs.
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
if ARGV[8] ~= '1' then
  local stored = redis.call('HMGET', KEYS[1], ARGV[1], ARGV[2])
  local stored_event = micros(stored[1])
  if stored_event then
    local stored_created = micros(stored[2]) or stored_event
    local event, created = tonumber(ARGV[3]), tonumber(ARGV[4])
    if event < stored_event or (event == stored_event and created <= stored_created) then
      return 0
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[5], ARGV[2], ARGV[6], unpack(ARGV, 9))
local expiry = tonumber(ARGV[7])
if expiry > 0 then redis.call('EXPIRE', KEYS[1], expiry) end
return 1
"""


def _micros(ts: datetime) -> int:
    stamp = Timestamp()
    stamp.FromDatetime(ts)
    return stamp.seconds * 1_000_000 + stamp.nanos // 1_000


def _serialized(ts: datetime) -> bytes:
    stamp = Timestamp()
    stamp.FromDatetime(ts)
    return stamp.SerializeToString()


def script_calls(
    config: RepoConfig, table: FeatureView, data: Sequence[Any]
) -> list[tuple[bytes, list[Any]]]:
    """(key, ARGV) of WRITE_IF_NEWER for each row: fields and values as Feast writes them."""
    store = config.online_store
    view = _versioned_fv_name(table, config)
    ts_field, created_field = f"_ts:{view}", f"{CREATED_FIELD_PREFIX}{view}"
    expiry = store.key_ttl_seconds or 0
    force = 1 if store.skip_dedup else 0
    calls = []
    for entity_key, values, event_time, created_time in data:
        event, created = row_version(event_time, created_time)
        args: list[Any] = [ts_field, created_field, _micros(event), _micros(created),
                           _serialized(event), _serialized(created), expiry, force]  # fmt: skip
        for name, value in values.items():
            args += [_mmh3(f"{view}:{name}"), value.SerializeToString()]
        key = _redis_key(
            config.project,
            entity_key,
            entity_key_serialization_version=config.entity_key_serialization_version,
        )
        calls.append((key, args))
    return calls


def write_newer(client: Any, config: RepoConfig, table: FeatureView, data: Sequence[Any]) -> int:
    """Write the rows newer than what Redis holds; the number written."""
    calls = [([key], args) for key, args in script_calls(config, table, data)]
    return sum(redis_scripts.evalsha_all(client, WRITE_IF_NEWER, calls))


async def write_newer_async(
    client: Any, config: RepoConfig, table: FeatureView, data: Sequence[Any]
) -> int:
    """`write_newer` on Feast's async client (the feature server's /push)."""
    calls = [([key], args) for key, args in script_calls(config, table, data)]
    return sum(await redis_scripts.evalsha_all_async(client, WRITE_IF_NEWER, calls))
