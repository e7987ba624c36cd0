"""How every Redis client of the platform reads its connection string: as Feast does, with
the password, when it came from REDIS_PASSWORD_FILE, read again for each new connection.

Feast's Redis store, the platform's store built on it (all three topologies) and the
feature server's own read path build their clients from these arguments. redis-py asks the
credential provider whenever it opens a connection, so after a rotation (the mounted
Secret changed) the next connection authenticates with the new password; the open ones
carry on, since Redis checks a password only when a connection opens.
"""

from __future__ import annotations

from typing import Any

from redis.credentials import CredentialProvider

from feature_platform.config import credentials
from feature_platform.feast_seam.stores import parse_redis_connection_string


class FileCredentials(CredentialProvider):
    """The connection string's user, with the password file's value of the moment."""

    def __init__(self, username: str | None, password: str) -> None:
        self.username = username
        self.password = password

    def get_credentials(self) -> tuple[str, ...]:  # type: ignore[override]
        """(user, password), (password) for the default user, or () for no AUTH at all
        (an empty password: a Redis without one)."""
        password = credentials.REDIS_PASSWORD.current(self.password)
        if not password:
            return ()
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.get_credentials()


def parse(connection_string: str) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """(nodes, client arguments) of a Feast Redis connection string; a password read from
    REDIS_PASSWORD_FILE becomes a `credential_provider` that reads the file again."""
    nodes, kwargs = parse_redis_connection_string(connection_string)
    if credentials.REDIS_PASSWORD.follows(kwargs.get("password")):
        username = kwargs.pop("username", None) or None
        kwargs["credential_provider"] = FileCredentials(username, kwargs.pop("password"))
    return nodes, kwargs
