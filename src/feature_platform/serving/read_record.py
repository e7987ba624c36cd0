"""Who reads what: reads per feature service, for Prometheus and for the rollout.

A read is counted in this worker's memory (`metrics.observe_reader`: one dict increment).
Every FLUSH_S, and only when there were reads, one HSET writes the time of the flush for
each service (and each view read by feature list) into the project's record in Redis
(`stores/service_reads.py`): off the request path, one small write per flush. A failed
write keeps the names for the next flush; it never reaches a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from feature_platform.serving import metrics
from feature_platform.stores import service_reads

log = logging.getLogger("feature_platform.server")


class ReadRecorder:
    FLUSH_S = 5.0

    def __init__(self, redis: Any, project: str, timeout_s: float) -> None:
        self.redis = redis
        self.project = project
        self.timeout_s = timeout_s
        self.unwritten: set[str] = set()
        self.scheduled = False
        self._task: asyncio.Task[None] | None = None

    def note(self, service: str | None, refs: tuple[str, ...]) -> None:
        """One read, by service or by feature list (the request path)."""
        metrics.observe_reader(service, refs)
        if self.scheduled or self.redis is None:
            return
        self.scheduled = True
        asyncio.get_running_loop().call_later(self.FLUSH_S, self._start_write)

    def _start_write(self) -> None:
        self._task = asyncio.ensure_future(self.write())

    async def write(self) -> None:
        self.scheduled = False
        self.unwritten |= metrics.take_readers()
        if not self.unwritten:
            return
        names, at = sorted(self.unwritten), time.time()
        try:
            async with asyncio.timeout(self.timeout_s):
                await service_reads.record_async(self.redis, self.project, names, at)
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not record feature service reads: %s", type(exc).__name__)
            return
        self.unwritten.difference_update(names)
