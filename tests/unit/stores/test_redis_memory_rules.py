"""The eviction-policy verdict: refused unless allowed, every evicting node named."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

from feature_platform.config.guard import ConfigError
from feature_platform.stores import redis_memory
from feature_platform.stores.redis_memory import NodeMemory
from feature_platform.stores.redis_online import RedisOnlineStore


def _node(name: str, policy: str) -> NodeMemory:
    return NodeMemory(name, policy, used_bytes=1, max_bytes=2, evicted_keys=0)


def test_noeviction_everywhere_passes_without_a_word() -> None:
    nodes = [_node("a:1", "noeviction"), _node("b:1", "noeviction")]
    assert redis_memory.judge(nodes, allow=False) is None
    assert redis_memory.judge(nodes, allow=True) is None


def test_one_evicting_primary_is_refused_by_name() -> None:
    nodes = [_node("a:1", "noeviction"), _node("b:1", "volatile-lru"), _node("c:1", "allkeys-lfu")]
    with pytest.raises(ConfigError) as refused:
        redis_memory.judge(nodes, allow=False)
    message = str(refused.value)
    assert "b:1 has maxmemory-policy volatile-lru, c:1 has maxmemory-policy allkeys-lfu" in message
    assert "a:1" not in message
    assert "REDIS_ALLOW_EVICTION=true" in message
    assert "\n" not in message


def test_allowed_eviction_is_a_warning() -> None:
    warning = redis_memory.judge([_node("a:1", "allkeys-lru")], allow=True)
    assert warning == (
        "warning: a:1 has maxmemory-policy allkeys-lru: Redis drops feature values when "
        "full (REDIS_ALLOW_EVICTION=true)"
    )


@pytest.mark.parametrize(
    ("redis_type", "connection_string", "name"),
    [
        (RedisType.redis, "redis.example:6380,db=1,password=secret", "redis.example:6380"),
        (RedisType.redis, "redis.example,db=1", "redis.example:6379"),
        (RedisType.redis_sentinel, "s1:26379,s2:26379,password=secret", "primary-set"),
    ],
)
def test_a_server_is_named_by_its_address_or_its_sentinel_name(
    redis_type: RedisType, connection_string: str, name: str
) -> None:
    config = RedisOnlineStoreConfig(
        redis_type=redis_type, connection_string=connection_string, sentinel_master="primary-set"
    )
    assert redis_memory.primary_name(config) == name


@dataclass
class RepoConfigStub:
    online_store: RedisOnlineStoreConfig


def test_settings_no_client_is_built_from_are_a_config_error() -> None:
    """A cluster has db 0 only: said before anything connects, with exit code 2."""
    config = RepoConfigStub(
        RedisOnlineStoreConfig(redis_type=RedisType.redis_cluster, connection_string="c1:7000,db=3")
    )
    with pytest.raises(ConfigError, match="database 0 only, not db=3"):
        redis_memory.check(RedisOnlineStore(), config, {})  # type: ignore[arg-type]
