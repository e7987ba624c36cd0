"""What the auth package raises: a 401 that asks for a bearer token, and a failed fetch
from the identity provider or the Kubernetes API (a 503 to the caller)."""

from __future__ import annotations

from feature_platform.errors import HTTPError, PlatformError


def unauthorized(detail: str) -> HTTPError:
    return HTTPError(401, "unauthorized", detail, [(b"www-authenticate", b'Bearer realm="feast"')])


class FetchError(PlatformError):
    """The identity provider (or the Kubernetes API) did not give a usable answer."""


def forbidden(reason: str) -> HTTPError:
    return HTTPError(403, "forbidden", reason)
