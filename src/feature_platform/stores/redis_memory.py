"""How full the online store's Redis is, and whether it may drop keys to make room.

A Redis at its `maxmemory` under an evicting policy (`allkeys-lru`, `volatile-lru`, ...,
the default of many managed services) deletes keys to take a write: a feature value
vanishes without an error, and the server answers NOT_FOUND as if the entity were new.
Under `noeviction` Redis refuses the write instead (an OOM error), which the platform
reports: a 503 on `/push`, a failed materialization run that loads the rows again.

Everything here comes from `INFO memory` and `INFO stats`, which managed services answer
where they block `CONFIG GET`, asked of every primary of a cluster (each holds its own
slots and fills up on its own) and of the primary the sentinels name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from feast.infra.online_stores import redis as feast_redis
from feast.repo_config import RepoConfig
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from feature_platform.config.guard import ConfigError, flag
from feature_platform.feast_seam.stores import parse_redis_connection_string

NOEVICTION = "noeviction"
ALLOW_VAR = "REDIS_ALLOW_EVICTION"
# What asking Redis may raise: redis-py's errors, its cluster client's own (not
# RedisErrors), sockets.
UNREACHABLE = (RedisError, RedisClusterException, OSError)


@dataclass(frozen=True)
class NodeMemory:
    node: str
    """host:port of the server or of a cluster primary; under Sentinel, the name the
    sentinels monitor, which stays the same across a failover."""
    policy: str
    used_bytes: int
    max_bytes: int
    """0: no limit."""
    evicted_keys: int


def primary_name(config: feast_redis.RedisOnlineStoreConfig) -> str:
    """The node label of a server that is not a cluster's."""
    if config.redis_type == feast_redis.RedisType.redis_sentinel:
        return str(config.sentinel_master)
    nodes, _ = parse_redis_connection_string(config.connection_string)
    return f"{nodes[0]['host']}:{nodes[0].get('port', 6379)}"


def _node(name: str, memory: Mapping[str, Any], stats: Mapping[str, Any]) -> NodeMemory:
    return NodeMemory(
        node=name,
        policy=str(memory.get("maxmemory_policy", "unknown")),
        used_bytes=int(memory.get("used_memory", 0)),
        max_bytes=int(memory.get("maxmemory", 0)),
        evicted_keys=int(stats.get("evicted_keys", 0)),
    )


def _targets(client: Any, config: feast_redis.RedisOnlineStoreConfig) -> list[tuple[str, dict]]:
    """(node label, the INFO call's keyword arguments) of each primary."""
    if isinstance(client, redis.RedisCluster | aioredis.RedisCluster):
        return [(node.name, {"target_nodes": node}) for node in client.get_primaries()]
    return [(primary_name(config), {})]


def read(client: Any, config: feast_redis.RedisOnlineStoreConfig) -> list[NodeMemory]:
    """Every primary's memory, on a synchronous client."""
    return [
        _node(name, client.info("memory", **kwargs), client.info("stats", **kwargs))
        for name, kwargs in _targets(client, config)
    ]


async def read_async(client: Any, config: feast_redis.RedisOnlineStoreConfig) -> list[NodeMemory]:
    """Every primary's memory, on an async client; the nodes are asked at once."""
    if isinstance(client, aioredis.RedisCluster):
        await client.initialize()  # the primaries are known once the slots are

    async def one(name: str, kwargs: dict) -> NodeMemory:
        memory, stats = await asyncio.gather(
            client.info("memory", **kwargs), client.info("stats", **kwargs)
        )
        return _node(name, memory, stats)

    return list(await asyncio.gather(*(one(n, kw) for n, kw in _targets(client, config))))


def judge(nodes: Sequence[NodeMemory], allow: bool) -> str | None:
    """Refuse (ConfigError) a node whose policy is not noeviction unless `allow`; the
    warning to print when allowed, None when every node is noeviction."""
    evicting = [node for node in nodes if node.policy != NOEVICTION]
    if not evicting:
        return None
    where = ", ".join(f"{node.node} has maxmemory-policy {node.policy}" for node in evicting)
    if not allow:
        raise ConfigError(
            f"Redis may drop feature values when full ({where}): set maxmemory-policy "
            f"noeviction, or {ALLOW_VAR}=true to accept values served as NOT_FOUND"
        )
    return f"warning: {where}: Redis drops feature values when full ({ALLOW_VAR}=true)"


def check(online_store: Any, config: RepoConfig, env: Mapping[str, str]) -> str | None:
    """Read the policy through `online_store`'s own client and judge it: ConfigError to
    refuse, else a line to print (a warning) or None.

    Only a policy Redis reports is refused: a Redis that does not answer, or refuses
    INFO (an ACL without it), gets a warning and no verdict, and the feature server's
    metrics and alerts keep watching (see docs/deploying/redis.md).
    """
    allow = flag(env, ALLOW_VAR)
    store_config = config.online_store
    try:
        client = online_store.sync_client(store_config)
    except ValueError as exc:  # settings no client is built from, such as a cluster's db
        raise ConfigError(str(exc)) from None
    except UNREACHABLE as exc:
        return f"warning: Redis maxmemory-policy not checked: no answer ({type(exc).__name__})"
    try:
        nodes = read(client, store_config)
    except ResponseError as exc:
        return f"warning: Redis maxmemory-policy not checked: INFO refused ({type(exc).__name__})"
    except UNREACHABLE as exc:
        return f"warning: Redis maxmemory-policy not checked: no answer ({type(exc).__name__})"
    return judge(nodes, allow)
