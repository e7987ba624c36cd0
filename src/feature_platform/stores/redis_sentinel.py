"""Sentinel connection pools that follow a failover within a second.

redis-py asks the sentinels for the primary only when it opens a connection. After a
planned failover (`SENTINEL FAILOVER`) the old primary stays up and keeps accepting
writes until Sentinel converts it to a replica, about ten seconds later, and then
discards them in the resync: pooled connections lost every write of that window. These
pools ask the sentinels again at most once a second when a connection is taken, and a
connection to a server that is no longer the primary reconnects before it is used.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelConnectionPool
from redis.sentinel import MasterNotFoundError, SentinelConnectionPool

RECHECK_S = 1.0


class FollowingSentinelPool(SentinelConnectionPool):
    _checked_at = 0.0

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() - self._checked_at >= RECHECK_S:
            self._checked_at = time.monotonic()
            # Drops the idle connections if it changed; connecting reports no primary.
            with contextlib.suppress(MasterNotFoundError):
                self.get_master_address()
        connection = super().get_connection(*args, **kwargs)
        primary = self.proxy.master_address
        if primary is not None and (connection.host, connection.port) != primary:
            connection.disconnect()
            connection.connect()
        return connection


class AsyncFollowingSentinelPool(AsyncSentinelConnectionPool):
    _checked_at = 0.0

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() - self._checked_at >= RECHECK_S:
            self._checked_at = time.monotonic()
            with contextlib.suppress(MasterNotFoundError):
                await self.get_master_address()
        connection = await super().get_connection(*args, **kwargs)
        primary = self.master_address
        if primary is not None and (connection.host, connection.port) != primary:
            await connection.disconnect()
            await connection.connect()
        return connection
