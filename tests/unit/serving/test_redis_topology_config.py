"""One connection string for every Redis topology: what each client is built from."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

from feature_platform.serving.fastpath.redis_clients import TopologyError, redis_client
from feature_platform.stores.redis_online import RedisOnlineStore, cluster_config
from feature_platform.stores.redis_sentinel import AsyncFollowingSentinelPool, FollowingSentinelPool

OPTIONS = "username=app,password=pw,ssl=false,socket_timeout=2,socket_connect_timeout=2"


def _store(redis_type: RedisType, connection_string: str) -> Any:
    config = RedisOnlineStoreConfig(redis_type=redis_type, connection_string=connection_string)
    return SimpleNamespace(config=SimpleNamespace(online_store=config))


def test_the_store_drops_db_0_for_a_cluster() -> None:
    config = RedisOnlineStoreConfig(
        redis_type=RedisType.redis_cluster, connection_string=f"r1:7000,r2:7001,db=0,{OPTIONS}"
    )
    assert cluster_config(config).connection_string == f"r1:7000,r2:7001,{OPTIONS}"


def _server_client(config: RedisOnlineStoreConfig) -> object:
    return redis_client(_store(config.redis_type, config.connection_string))


@pytest.mark.parametrize("make", [cluster_config, _server_client])
def test_another_db_on_a_cluster_is_refused_by_name(make: object) -> None:
    config = RedisOnlineStoreConfig(
        redis_type=RedisType.redis_cluster, connection_string=f"r1:7000,db=3,{OPTIONS}"
    )
    with pytest.raises(ValueError, match="database 0 only, not db=3"):
        make(config)  # type: ignore[operator]


def test_the_server_builds_a_client_per_topology() -> None:
    clustered = redis_client(_store(RedisType.redis_cluster, f"r1:7000,r2:7001,db=0,{OPTIONS}"))
    assert isinstance(clustered, aioredis.RedisCluster)
    assert [(n.host, n.port) for n in clustered.nodes_manager.startup_nodes.values()] == [
        ("r1", 7000),
        ("r2", 7001),
    ]
    sentinel = redis_client(_store(RedisType.redis_sentinel, f"s1:26379,s2:26379,db=1,{OPTIONS}"))
    assert isinstance(sentinel, aioredis.Redis)
    pool = sentinel.connection_pool
    assert isinstance(pool, AsyncFollowingSentinelPool)  # follows a failover
    assert pool.service_name == "mymaster"
    # The primary gets the credentials; the sentinels only the socket options, as in Feast.
    assert pool.connection_kwargs["username"] == "app" and pool.connection_kwargs["db"] == 1
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs.get("password") for s in sentinels] == [None] * 2
    assert isinstance(
        redis_client(_store(RedisType.redis, f"r1:6379,db=2,{OPTIONS}")), aioredis.Redis
    )


def test_no_address_is_a_topology_error() -> None:
    with pytest.raises(TopologyError, match="no host:port"):
        redis_client(_store(RedisType.redis, "db=2,password=pw"))


def test_the_store_writes_through_a_pool_that_follows_a_failover() -> None:
    config = RedisOnlineStoreConfig(
        redis_type=RedisType.redis_sentinel, connection_string=f"s1:26379,db=1,{OPTIONS}"
    )
    client = RedisOnlineStore()._get_client(config)
    assert isinstance(client.connection_pool, FollowingSentinelPool)
    assert client.connection_pool.connection_kwargs["password"] == "pw"
