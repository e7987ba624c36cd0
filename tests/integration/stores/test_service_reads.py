"""The servers' record of reads on a real redis-server: its beginning is written once and
kept by every later write and by a retirement's clean-up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis
import redis.asyncio
from faults import PrivateRedis

from feature_platform.stores import service_reads


def test_the_record_keeps_the_time_of_its_first_write(tmp_path: Path) -> None:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        sync = redis.Redis(port=server.port)
        assert service_reads.read(sync, "p") == ({}, {}, None)

        async def write(names: list[str], at: float) -> None:
            client = redis.asyncio.Redis(port=server.port)
            try:
                await service_reads.record_async(client, "p", names, at)
            finally:
                await client.aclose()

        asyncio.run(write(service_reads.fields(["model_v1"], ["stats"]), 100.0))
        assert service_reads.read(sync, "p") == ({"model_v1": 100.0}, {"stats": 100.0}, 100.0)
        asyncio.run(write(service_reads.fields(["model_v2"], []), 200.0))
        service_reads.forget(sync, "p", ["model_v1"], ["stats"])
        assert service_reads.read(sync, "p") == ({"model_v2": 200.0}, {}, 100.0)
        # A Redis that lost the record (flushed, rebuilt) begins it again at the next write.
        sync.flushall()
        asyncio.run(write(service_reads.fields(["model_v2"], []), 300.0))
        assert service_reads.read(sync, "p") == ({"model_v2": 300.0}, {}, 300.0)
    finally:
        server.stop()
