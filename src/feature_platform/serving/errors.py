"""Errors only the feature server answers with (the rest are `feature_platform.errors`):
a status and a JSON body, never a traceback."""

from __future__ import annotations

from typing import Any

from feature_platform.errors import HTTPError, unavailable


def store_timed_out(timeout_s: float) -> HTTPError:
    return unavailable(f"online store did not answer within {timeout_s}s")


def require_booleans(request: dict[str, Any], *names: str) -> None:
    """422 for the first of `names` the request gives as anything but true or false."""
    for name in names:
        if not isinstance(request.get(name, False), bool):
            raise HTTPError(422, "unprocessable", f"'{name}' must be a boolean")
