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

Past the worker's bound on requests in flight (saturation.py), a request to an endpoint
the bound counts is refused here, as its headers end: its body is read and dropped and
the 503 written when it is complete, with no ASGI task, so that a refusal costs a
fraction of a served request and shedding leaves the capacity to the admitted ones. A
request behind another on its connection, one expecting 100-continue, or any request
while the server drains takes the app's path, which refuses the same way.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from feature_platform.serving import metrics
from feature_platform.serving.lifecycle import draining
from feature_platform.serving.saturation import COUNTED, InFlight

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
        # The request being read is refused at the bound: (path, keep alive, start time).
        _refusing: tuple[str, bool, float] | None = None

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

        def on_headers_complete(self) -> None:
            in_flight = InFlight.worker
            if in_flight is None or not in_flight.full() or not self._may_refuse():
                super().on_headers_complete()
                return
            path = httptools.parse_url(self.url).path.decode("ascii", "replace")
            if self.parser.get_method().decode("ascii", "replace") not in COUNTED.get(path, ()):
                super().on_headers_complete()
                return
            keep_alive = self.parser.get_http_version() == "1.1" and self.parser.should_keep_alive()
            self._refusing = (path, keep_alive, self.loop.time())

        def _may_refuse(self) -> bool:
            """Nothing ahead of it on the connection to answer first, no 100-continue to
            send, no upgrade, and no drain (whose responses close their connection)."""
            return (
                (self.cycle is None or self.cycle.response_complete)
                and not self.expect_100_continue
                and not self.parser.should_upgrade()
                and not draining()
            )

        def on_body(self, body: bytes) -> None:
            if self._refusing is None:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self._disarm()
            if self._refusing is None:
                super().on_message_complete()
                return
            (path, keep_alive, started), self._refusing = self._refusing, None
            in_flight = InFlight.worker
            assert in_flight is not None
            self.transport.write(in_flight.refusals[keep_alive])
            in_flight.refused()
            metrics.observe(path, 503, self.loop.time() - started)
            if keep_alive:
                self.on_response_complete()
            else:
                self.transport.close()

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
