"""Pipelined EVALSHA calls on every Redis topology Feast supports.

redis-py's cluster pipelines refuse EVALSHA, so on a Redis Cluster the calls go as one
pipeline per node, each call to the node of its keys (a call's keys share one slot). The
script is loaded first, on every primary of a cluster, so a restarted or newly promoted
server has it. A slot that moves mid-batch fails the batch (MOVED); rerunning it is safe,
as every write here compares before it writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis

Call = tuple[Sequence[bytes], Sequence[Any]]


def evalsha_all(client: Any, script: str, calls: Sequence[Call]) -> list[Any]:
    """The reply of each call (KEYS, ARGV) of `script`, in order."""
    if not calls:
        return []
    sha = client.script_load(script)
    if not isinstance(client, redis.RedisCluster):
        with client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                pipe.evalsha(sha, len(keys), *keys, *args)
            return list(pipe.execute())
    by_node: dict[str, list[int]] = {}
    for index, (keys, _) in enumerate(calls):
        by_node.setdefault(client.get_node_from_key(keys[0]).name, []).append(index)
    replies: list[Any] = [None] * len(calls)
    for name, indexes in by_node.items():
        node = client.get_redis_connection(client.get_node(node_name=name))
        with node.pipeline(transaction=False) as pipe:
            for index in indexes:
                keys, args = calls[index]
                pipe.evalsha(sha, len(keys), *keys, *args)  # type: ignore[arg-type]
            for index, reply in zip(indexes, pipe.execute(), strict=True):
                replies[index] = reply
    return replies


async def evalsha_all_async(client: Any, script: str, calls: Sequence[Call]) -> list[Any]:
    """`evalsha_all` on an async client (pushes: a few calls each)."""
    if not calls:
        return []
    sha = await client.script_load(script)
    if isinstance(client, aioredis.RedisCluster):
        # One call at a time, each routed by its keys (and redirected if its slot moved).
        return [await client.evalsha(sha, len(keys), *keys, *args) for keys, args in calls]  # type: ignore[arg-type,misc]
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        return list(await pipe.execute())
