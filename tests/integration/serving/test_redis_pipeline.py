"""The read path's pipelined Redis connection against the real server: every caller gets
its own reply, a caller that gave up shifts nobody's, a lost connection fails what waits
on it and the next command connects again."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from stacks import _claim_redis_db, _release_redis_db

from feature_platform.serving.fastpath.redis_pipeline import PipelinedConnection

BUSY_FOR_300_MS = """
local start = redis.call('TIME')
repeat
  local now = redis.call('TIME')
until (now[1] - start[1]) * 1000000 + (now[2] - start[2]) > 300000
return 1
"""
SETTINGS = {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "6379", "REDIS_PASSWORD": ""}


@pytest.fixture(scope="module")
def db() -> Iterator[int]:
    settings = {**SETTINGS, "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", "")}
    claimed = _claim_redis_db(settings)
    try:
        yield claimed
    finally:
        _release_redis_db(settings, claimed)


def _sync(db: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=6379, db=db)


def test_concurrent_callers_each_get_their_own_reply(db: int) -> None:
    _sync(db).mset({f"pipe:{i}": f"v{i}" for i in range(300)})

    async def run() -> list[bytes]:
        connection = PipelinedConnection("127.0.0.1", 6379, db=db)
        try:
            return await asyncio.gather(
                *(connection.execute_command("GET", f"pipe:{i}") for i in range(300))
            )
        finally:
            connection.close()

    assert asyncio.run(run()) == [f"v{i}".encode() for i in range(300)]


def test_a_caller_that_gave_up_shifts_no_other_reply(db: int) -> None:
    _sync(db).mset({"pipe:late": "late", "pipe:next": "next"})

    async def run() -> bytes:
        connection = PipelinedConnection("127.0.0.1", 6379, db=db)
        try:
            await connection.execute_command("PING")
            # a script that keeps Redis (one thread) busy for 0.3 s, from another client
            busy = _sync(db).register_script(BUSY_FOR_300_MS)
            pause = asyncio.create_task(asyncio.to_thread(busy))
            await asyncio.sleep(0.05)  # Redis is busy now
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await connection.execute_command("GET", "pipe:late")
            await pause
            return await connection.execute_command("GET", "pipe:next")
        finally:
            connection.close()

    assert asyncio.run(run()) == b"next"


def test_a_lost_connection_fails_its_callers_and_the_next_command_reconnects(db: int) -> None:
    async def run() -> None:
        connection = PipelinedConnection("127.0.0.1", 6379, db=db)
        try:
            client_id = await connection.execute_command("CLIENT", "ID")
            _sync(db).execute_command("CLIENT", "KILL", "ID", str(client_id))
            with pytest.raises(RedisConnectionError):
                for _ in range(50):  # the loss is seen once the kernel reports it
                    await connection.execute_command("PING")
                    await asyncio.sleep(0.02)
            assert await connection.execute_command("PING") == b"PONG"
            assert await connection.execute_command("CLIENT", "ID") != client_id
        finally:
            connection.close()

    asyncio.run(run())


def test_errors_are_redis_pys(db: int) -> None:
    async def run() -> None:
        connection = PipelinedConnection("127.0.0.1", 6379, db=db)
        try:
            with pytest.raises(NoScriptError):
                await connection.execute_command("EVALSHA", "0" * 40, 0)
            with pytest.raises(ResponseError):
                await connection.execute_command("NO-SUCH-COMMAND")
            assert await connection.execute_command("PING") == b"PONG"
        finally:
            connection.close()

    asyncio.run(run())


def test_an_unreachable_server_is_a_connection_error() -> None:
    async def run() -> None:
        connection = PipelinedConnection("127.0.0.1", 1, connect_timeout_s=0.5)
        with pytest.raises(RedisConnectionError):
            await connection.execute_command("PING")

    asyncio.run(run())
