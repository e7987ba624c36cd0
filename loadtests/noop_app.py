"""The HTTP floor: an ASGI app that answers every request with a fixed JSON body.

Run under the same gunicorn + uvicorn worker as the feature server, it measures what
the HTTP stack alone costs, with no registry, no store and no encoding work.
"""

from typing import Any

BODY = b'{"metadata":{"feature_names":["customer_id"]},"results":[]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
