"""Pipelined EVALSHA calls on every Redis topology Feast supports.

redis-py's cluster pipelines refuse EVALSHA, so on a Redis Cluster the calls go as one
pipeline per node, each call to the node of its keys (a call's keys share one slot). The
script is loaded first, on every primary of a cluster, so a restarted or newly promoted
server has it. A call whose slot moved (MOVED, ASK) or whose node went away is sent again,
with the script's text, through the cluster client, which follows the redirect.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import AskError, MovedError

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
        try:
            with node.pipeline(transaction=False) as pipe:
                for index in indexes:
                    keys, args = calls[index]
                    pipe.evalsha(sha, len(keys), *keys, *args)  # type: ignore[arg-type]
                node_replies = pipe.execute(raise_on_error=False)
        except (redis.ConnectionError, redis.TimeoutError):
            node_replies = [None] * len(indexes)  # the node is gone: each call is retried
        for index, reply in zip(indexes, node_replies, strict=True):
            if reply is None or isinstance(reply, (redis.ConnectionError, MovedError, AskError)):
                # The slot moved (a failover, a resharding) or its node went away: the
                # cluster client routes the call, follows the redirect and learns the
                # new slot map; EVAL, as the new node may not have the script yet. Safe
                # to repeat: the script compares before it writes.
                keys, args = calls[index]
                reply = client.eval(script, len(keys), *keys, *args)  # type: ignore[arg-type]
            elif isinstance(reply, Exception):
                raise reply
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
