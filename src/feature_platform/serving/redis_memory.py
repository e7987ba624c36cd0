"""The online store's Redis memory, as the feature server sees it: its eviction policy
checked once at start, and its memory read at scrape time.

The check runs in the gunicorn master before any worker starts, so a refusal is one line
and the configuration-error exit code, not a crash loop of workers
(`stores/redis_memory.py` decides). The metrics are read when Prometheus scrapes
`/metrics`, like freshness: never on the request path, within the store's deadline, and a
scrape still answers when Redis does not.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from feast.infra.online_stores import redis as feast_redis

from feature_platform.config import feast_commands
from feature_platform.console import Say
from feature_platform.serving.fastpath.redis_clients import AsyncRedis
from feature_platform.stores import redis_memory
from feature_platform.stores.redis_memory import NodeMemory
from feature_platform.stores.redis_online import RedisOnlineStore

log = logging.getLogger("feature_platform.server")


def check_at_start(env: str, say: Say) -> None:
    """Refuse (ConfigError) to serve on a Redis that may evict, unless allowed; the
    process environment holds the environment's settings."""
    config = feast_commands.repo_config(env)
    if not isinstance(config.online_store, feast_redis.RedisOnlineStoreConfig):
        return
    store = RedisOnlineStore()
    try:
        warning = redis_memory.check(store, config, os.environ)
    finally:
        # Workers open their own connections; none is inherited from here.
        store.drop_sync_client()
    if warning:
        say(warning)


@dataclass(frozen=True)
class RedisMemory:
    nodes: list[NodeMemory] = field(default_factory=list)
    read_ok: bool = False


class RedisMemoryReader:
    def __init__(
        self, client: AsyncRedis, config: feast_redis.RedisOnlineStoreConfig, timeout_s: float
    ) -> None:
        self.client = client
        self.config = config
        self.timeout_s = timeout_s

    async def read(self) -> RedisMemory:
        try:
            nodes = await asyncio.wait_for(
                redis_memory.read_async(self.client, self.config), self.timeout_s
            )
        except (TimeoutError, *redis_memory.UNREACHABLE) as exc:
            log.warning("Redis memory not read: %s", type(exc).__name__)
            return RedisMemory()
        return RedisMemory(nodes, True)
