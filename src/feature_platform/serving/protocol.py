"""uvicorn's HTTP protocol with a bound on how long a request may take to arrive, and
with requests that ask to upgrade to h2c answered in HTTP/1.1, body intact.

uvicorn times out idle keep-alive connections only: a client that sends half a header,
or a body slower than it announced, holds its connection (and the request's memory)
for as long as it likes. Here a request's headers and body must arrive within the read
timeout, counted from the connection or from the first byte of the request; a request
that does not gets 408 when nothing was answered yet, and its connection is closed.

Java's built-in HttpClient sends every plain-http request with `Connection: Upgrade,
HTTP2-Settings` and `Upgrade: h2c`. llhttp then ends the message at the headers and
hands the body back as "upgrade data", which uvicorn drops: the app would see an empty
body. The server does not speak h2c, and HTTP/1.1 lets it ignore the upgrade (RFC 9110,
7.8), so here those bytes are read as the request's body by its Content-Length, under
the same read timeout, and a fresh parser takes the connection's next request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_TIMEOUT_BODY = b'{"error":"request timeout","detail":"the request did not arrive in time"}'
TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


def bounded_read_protocol(
    timeout_s: float, base: type[HttpToolsProtocol] = HttpToolsProtocol
) -> type[HttpToolsProtocol]:
    """The protocol class for uvicorn's `http` setting: `base` with this read timeout,
    ignoring h2c upgrades."""

    class BoundedReadProtocol(base):  # type: ignore[misc,valid-type]
        _read_deadline: asyncio.TimerHandle | None = None
        # Body bytes of a request whose upgrade was ignored, still to come.
        _upgrade_body_left = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._upgrade_body_left:
                data = self._take_upgrade_body(data)
                if not data:
                    return
            if self._read_deadline is None and (self.cycle is None or self.cycle.response_complete):
                self._arm()  # the first bytes of a request on a kept-alive connection
            self._unset_keepalive_if_required()
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.send_400_response("Invalid HTTP request received.")
            except httptools.HttpParserUpgrade as upgrade:
                if self._should_upgrade():
                    self.handle_websocket_upgrade()
                else:
                    self._ignore_upgrade(data[upgrade.args[0] :])

        def _ignore_upgrade(self, rest: bytes) -> None:
            headers = dict(self.headers)
            length = headers.get(b"content-length", b"0")
            if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
                self.send_400_response("A chunked body cannot come with an upgrade request.")
                return
            if not length.isdigit():
                self.send_400_response("Invalid Content-Length.")
                return
            self.parser = httptools.HttpRequestParser(self)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
            self._upgrade_body_left = int(length)
            if self._upgrade_body_left:
                # llhttp ended the message at the headers: reopen it for its body.
                self.cycle.more_body = True
                self.cycle.message_event.clear()
                self._arm()
                rest = self._take_upgrade_body(rest)
            if rest:
                self.data_received(rest)

        def _take_upgrade_body(self, data: bytes) -> bytes:
            """Append what belongs to the pending body; return the bytes after it."""
            chunk, rest = data[: self._upgrade_body_left], data[self._upgrade_body_left :]
            self._upgrade_body_left -= len(chunk)
            self.on_body(chunk)
            if not self._upgrade_body_left:
                self.on_message_complete()
            return rest

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
