"""Who is calling: the bearer token of a request, read into Feast's `User` by a verifier.

`TokenVerifier` is what every server calls; the verifiers are `oidc.py` (an identity
provider's signed tokens), `kubernetes.py` (service-account tokens, by TokenReview) and
`NoAuthVerifier` here; `verifiers.py` picks one from the settings. Error details name
what is wrong with a token, never the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feast.permissions.user import User

from feature_platform.auth.errors import unauthorized

# A verified token is remembered this long at most (and never past its expiry), so a
# request pays one dictionary lookup instead of an RSA verification.
VERIFIED_CACHE_S = 60.0
MAX_CACHED_TOKENS = 10_000
# Identity claims, in Feast's order of preference.
USERNAME_CLAIMS = ("preferred_username", "upn", "azp", "appid", "sub")


def bearer_token(authorization: bytes | str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header; 401 otherwise."""
    if isinstance(authorization, bytes):
        try:
            authorization = authorization.decode("ascii")
        except UnicodeDecodeError:
            raise unauthorized("the Authorization header is not ASCII") from None
    if not authorization:
        raise unauthorized("a bearer token is required (Authorization: Bearer <token>)")
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


def _string_list(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def user_from_claims(claims: Mapping[str, Any], client_id: str) -> User:
    """Feast's reading of a verified token: its name, roles and groups."""
    username = next((claims[c] for c in USERNAME_CLAIMS if isinstance(claims.get(c), str)), None)
    if not username:
        raise unauthorized("the token names no subject")
    roles: list[str] = []
    access = claims.get("resource_access")
    if client_id and isinstance(access, dict) and isinstance(access.get(client_id), dict):
        roles = _string_list(access[client_id].get("roles"))
    roles = list(dict.fromkeys(roles + _string_list(claims.get("roles"))))
    return User(username=username, roles=roles, groups=_string_list(claims.get("groups")))


class TokenVerifier:
    """Turns an Authorization header into a Feast `User`, or raises HTTPError 401/503."""

    async def user(self, authorization_header: bytes | str | None) -> User:
        return await self.user_of(bearer_token(authorization_header))

    def user_blocking(self, authorization_header: bytes | str | None) -> User:
        """`user` for servers whose handlers run in threads (gRPC, Arrow Flight)."""
        return self.user_of_blocking(bearer_token(authorization_header))

    async def user_of(self, token: str) -> User:
        raise NotImplementedError

    def user_of_blocking(self, token: str) -> User:
        raise NotImplementedError

    def start(self) -> None:
        """Begin background work (key refresh); idempotent."""

    def close(self) -> None:
        """Stop background work."""


class VerifiedCache:
    """token -> (user, until): what was verified, for a short while."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[User, float]] = {}

    def get(self, token: str, now: float) -> User | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[1] <= now:
            self._entries.pop(token, None)
            return None
        return entry[0]

    def put(self, token: str, user: User, until: float) -> None:
        if len(self._entries) >= MAX_CACHED_TOKENS:
            self._entries = {}
        self._entries[token] = (user, until)

    def clear(self) -> None:
        self._entries = {}


class NoAuthVerifier(TokenVerifier):
    """`AUTH_TYPE=no_auth`: everyone is the anonymous user, as in Feast."""

    async def user_of(self, token: str) -> User:
        return User(username="", roles=[])

    def user_of_blocking(self, token: str) -> User:
        return User(username="", roles=[])

    async def user(self, authorization_header: bytes | str | None) -> User:
        return User(username="", roles=[])

    def user_blocking(self, authorization_header: bytes | str | None) -> User:
        return User(username="", roles=[])
