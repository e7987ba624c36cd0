"""HTTP apps made read-only: what the registry's REST API and the UI share.

Every request but GET, HEAD and OPTIONS (and the few named in `also_allowed`) gets a 403
with a JSON body before the wrapped app sees it; every answer carries headers saying the
pages are never framed by another site and are what their content type says.
"""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY")]


class ReadOnly:
    def __init__(
        self, app: ASGIApp, detail: str, also_allowed: frozenset[tuple[str, str]] = frozenset()
    ) -> None:
        self.app = app
        self.refusal = json.dumps({"error": "read_only", "detail": detail}).encode()
        self.also_allowed = also_allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in READ_METHODS and (method, scope["path"]) not in self.also_allowed:
            headers = [
                (b"content-type", b"application/json"),
                *HEADERS,
                (b"content-length", str(len(self.refusal)).encode()),
            ]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": self.refusal})
            return

        async def with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)
