"""One pipelined connection to a single Redis server for the read path.

redis-py's async client takes a pooled connection per command: a health check, a write
and a read each, per request. Here concurrent requests share one connection: commands
issued in the same event-loop turn leave in one write, and one read delivers every
reply that has arrived. Redis answers in order, so replies are matched to waiting
requests first in, first out; a request that gave up (its deadline) leaves its place,
and its reply is dropped when it comes.

A connection whose oldest reply is overdue by `stall_timeout_s` is closed, failing what
waits on it; the next command connects again. Errors are redis-py's exception types, so
callers handle them as they do redis-py's.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import hiredis
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: PipelinedConnection) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiting = self.owner.waiting
        while (reply := self.reader.gets()) is not False:
            future, _sent = waiting.popleft()
            if future.done():
                continue  # its caller gave up
            if isinstance(reply, hiredis.ReplyError):
                message = str(reply)
                error = NoScriptError if message.startswith("NOSCRIPT") else ResponseError
                future.set_exception(error(message))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, exc)


class PipelinedConnection:
    def __init__(
        self,
        host: str,
        port: int,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout_s: float = 2.0,
        stall_timeout_s: float = 2.0,
        credentials: CredentialProvider | None = None,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        # asked at each connect instead of username/password (a password file)
        self.credentials = credentials
        self.connect_timeout_s = connect_timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None
        self._outgoing: list[bytes] = []

    async def execute_command(self, *args: Any) -> Any:
        transport = self._transport
        if transport is None or transport.is_closing():
            transport = await self._connect()
        elif self.waiting and time.monotonic() - self.waiting[0][1] > self.stall_timeout_s:
            transport.abort()  # no reply for too long: connect again
            transport = await self._connect()
        return await self._send(transport, _pack(args))

    async def script_load(self, script: str) -> Any:
        return await self.execute_command("SCRIPT", "LOAD", script)

    def _send(self, transport: asyncio.Transport, packed: bytes) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting.append((future, time.monotonic()))
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush, transport)
        self._outgoing.append(packed)
        return future

    def _flush(self, transport: asyncio.Transport) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if not transport.is_closing():
            transport.write(b"".join(outgoing))

    async def _connect(self) -> asyncio.Transport:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._transport is not None and not self._transport.is_closing():
                return self._transport
            loop = asyncio.get_running_loop()
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    transport, protocol = await loop.create_connection(
                        lambda: _Protocol(self), self.host, self.port
                    )
            except (OSError, TimeoutError) as exc:
                raise RedisConnectionError(f"connecting to Redis: {type(exc).__name__}") from None
            self._transport, self._protocol = transport, protocol
            setup: list[tuple[Any, ...]] = []
            if self.credentials is not None:
                credentials = self.credentials.get_credentials()
                if credentials:  # none: a Redis without a password
                    setup.append(("AUTH", *credentials))
            elif self.password and self.username:  # an ACL user
                setup.append(("AUTH", self.username, self.password))
            elif self.password:
                setup.append(("AUTH", self.password))
            if self.db:
                setup.append(("SELECT", self.db))
            replies = [self._send(transport, _pack(command)) for command in setup]
            try:
                async with asyncio.timeout(self.connect_timeout_s):
                    await asyncio.gather(*replies)
            except BaseException:
                transport.abort()
                raise
            return transport

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return
        self._transport = self._protocol = None
        self._outgoing = []
        waiting, self.waiting = self.waiting, deque()
        for future, _sent in waiting:
            if not future.done():
                future.set_exception(RedisConnectionError("connection to Redis lost"))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def _pack(args: tuple[Any, ...]) -> bytes:
    return bytes(hiredis.pack_command(args))
