"""The feature server's own async Redis client, on the store's Redis settings.

Built from Feast's `online_store` config exactly as Feast builds its clients (same
connection string parser, same keyword arguments), for each of Feast's topologies:

- `redis`: one server; commands packed by hiredis.
- `redis_sentinel`: the connection string lists the sentinels; connections go to the
  primary they name for `sentinel_master` and, within a second of a failover, to the
  new one (`stores/redis_sentinel.py`).
- `redis_cluster`: the connection string lists seed nodes; redis-py discovers the slots,
  routes each command by its key and follows MOVED and ASK as slots move.

Every option of the connection string (`username`, `password`, `ssl`, `ssl_ca_certs`,
`db`, ...) applies as in Feast (a password from REDIS_PASSWORD_FILE read again for each
new connection, `stores/redis_connection.py`), except `socket_timeout`: one deadline
bounds the whole read (settings.store_timeout_s), and a per-reply socket timeout on top
would cost a timer per command. Sentinels get the socket options only, as in Feast.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from feast import FeatureStore
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection

from feature_platform.errors import PlatformError
from feature_platform.serving.fastpath.redis_pipeline import PipelinedConnection
from feature_platform.stores import redis_connection
from feature_platform.stores.redis_sentinel import AsyncFollowingSentinelPool

AsyncRedis = aioredis.Redis | aioredis.RedisCluster


class TopologyError(PlatformError, ValueError):
    """An online store configuration no Redis client can be built from."""


def redis_client(store: FeatureStore) -> AsyncRedis | None:
    """An async client on the store's own Redis settings; None where the store is not
    Redis (the fast path does not apply)."""
    config = store.config.online_store
    if not isinstance(config, RedisOnlineStoreConfig):
        return None
    nodes, kwargs = redis_connection.parse(config.connection_string)
    kwargs.pop("socket_timeout", None)
    addresses = [(node["host"], int(node.get("port", 6379))) for node in nodes]
    if not addresses:
        raise TopologyError("the Redis connection string names no host:port")
    if config.redis_type == RedisType.redis_cluster:
        return _cluster(addresses, kwargs)
    if config.redis_type == RedisType.redis_sentinel:
        return _sentinel(addresses, config.sentinel_master, kwargs)
    host, port = addresses[0]
    if kwargs.pop("ssl", False):
        return aioredis.Redis(host=host, port=port, ssl=True, **kwargs)
    pool = aioredis.ConnectionPool(
        connection_class=_HiredisPackingConnection, host=host, port=port, **kwargs
    )
    return aioredis.Redis(connection_pool=pool)


def _cluster(addresses: list[tuple[str, int]], kwargs: dict[str, Any]) -> aioredis.RedisCluster:
    if kwargs.get("db"):
        raise TopologyError(f"a Redis Cluster has database 0 only, not db={kwargs['db']}")
    kwargs.pop("db", None)
    # Feast's cluster option; redis-py's async client has no such argument.
    kwargs.pop("skip_full_coverage_check", None)
    startup = [ClusterNode(host, port) for host, port in addresses]
    return _ReadCluster(startup_nodes=startup, **kwargs)


class _ReadCluster(aioredis.RedisCluster):
    async def ping(self, **_kwargs: Any) -> bool:
        """Every primary answers: those are the nodes the read path asks. (redis-py's
        default asks every node, so one lost replica would fail readiness.)"""
        await self.execute_command("PING", target_nodes=self.PRIMARIES)
        return True


def _sentinel(
    addresses: list[tuple[str, int]], master: str, kwargs: dict[str, Any]
) -> aioredis.Redis:
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    sentinels = Sentinel(addresses, sentinel_kwargs=sentinel_kwargs, **kwargs)
    pool = AsyncFollowingSentinelPool
    if kwargs.get("ssl"):
        return sentinels.master_for(master, connection_pool_class=pool)
    return sentinels.master_for(
        master, connection_pool_class=pool, connection_class=_HiredisSentinelConnection
    )


def pipelined_connection(client: AsyncRedis) -> PipelinedConnection | None:
    """The read path's pipelined connection to the same server, for one plain (no TLS,
    no sentinel) Redis; None for other topologies, which keep redis-py's client."""
    if not isinstance(client, aioredis.Redis):
        return None
    pool = client.connection_pool
    if pool.connection_class is not _HiredisPackingConnection:
        return None
    options = pool.connection_kwargs
    return PipelinedConnection(
        options.get("host", "localhost"),
        int(options.get("port", 6379)),
        db=int(options.get("db", 0) or 0),
        username=options.get("username") or None,
        password=options.get("password") or None,
        credentials=options.get("credential_provider"),
        connect_timeout_s=float(options.get("socket_connect_timeout") or 2.0),
    )


class _HiredisPacking:
    """redis-py's async connection packs commands in Python, about 5 us an argument;
    a 100-entity read has hundreds. hiredis packs them in C."""

    def pack_command(self, *args: Any) -> list[bytes]:
        if isinstance(args[0], str) and " " in args[0]:
            # redis-py names some commands with their subcommand: "SCRIPT EXISTS"
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class _HiredisPackingConnection(_HiredisPacking, aioredis.Connection):
    pass


class _HiredisSentinelConnection(_HiredisPacking, SentinelManagedConnection):
    pass
