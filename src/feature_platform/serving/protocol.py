"""uvicorn's HTTP protocol with a bound on how long a request may take to arrive.

uvicorn times out idle keep-alive connections only: a client that sends half a header,
or a body slower than it announced, holds its connection (and the request's memory)
for as long as it likes. Here a request's headers and body must arrive within the read
timeout, counted from the connection or from the first byte of the request; a request
that does not gets 408 when nothing was answered yet, and its connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = b'{"error":"request timeout","detail":"the request did not arrive in time"}'
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def bounded_read_protocol(
    timeout_s: float, base: type[HttpToolsProtocol] = HttpToolsProtocol
) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting: `base` with this read timeout."""

    class BoundedReadProtocol(base):  # type: ignore[misc,valid-type]
        _read_deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._read_deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of a request on a kept-alive connection
            super().data_received(data)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._read_deadline = self.loop.call_later(timeout_s, self._read_timed_out)

        def _disarm(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_timed_out(self) -> None:
            self._read_deadline = None
            if self.transport.is_closing():
                return
            cycle = self.cycle  # None, or the request being read, or the one before it
            if cycle is None or cycle.response_complete or not cycle.response_started:
                self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()

    return BoundedReadProtocol
