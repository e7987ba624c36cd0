"""Errors the feature server answers with: a status and a JSON body, never a traceback."""

from __future__ import annotations

from typing import Any


class HTTPError(Exception):
    """A client or dependency problem, phrased for the response body."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str = "",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or []

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "detail": self.detail}


def bad_request(detail: str) -> HTTPError:
    return HTTPError(400, "bad request", detail)


def not_found(detail: str) -> HTTPError:
    return HTTPError(404, "not found", detail)


def unavailable(detail: str) -> HTTPError:
    return HTTPError(503, "service unavailable", detail)


def store_timed_out(timeout_s: float) -> HTTPError:
    return unavailable(f"online store did not answer within {timeout_s}s")


def require_booleans(request: dict[str, Any], *names: str) -> None:
    """422 for the first of `names` the request gives as anything but true or false."""
    for name in names:
        if not isinstance(request.get(name, False), bool):
            raise HTTPError(422, "unprocessable", f"'{name}' must be a boolean")
