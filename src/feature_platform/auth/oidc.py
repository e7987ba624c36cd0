"""OIDC bearer tokens, verified without ever blocking a server on the identity provider.

Feast's OIDC parser fetches the discovery document with no timeout and the signing keys
synchronously inside the async handler, checks `aud` and `iss` only when configured, and
accepts an unsigned token naming `INTRA_COMMUNICATION_BASE64`. The verifier here instead:

- fetches the discovery document and the JWKS in a background thread, each call within
  AUTH_FETCH_TIMEOUT_SECONDS, again every AUTH_KEYS_CACHE_SECONDS; requests only read
  the cached keys;
- on a token signed with a key it does not know (the provider rotated), starts at most
  one refresh (shared by every request waiting on it, and not more often than
  `min_refresh_s`) and waits for it no longer than the fetch deadline. A provider that
  does not answer makes such a request fail with 503 (the server cannot tell whether the
  token is good: a dependency is down, nothing is granted), while tokens signed with a
  cached key keep being verified: keys are kept when a refresh fails, replaced when one
  succeeds;
- accepts RS256 only, and always requires and verifies `exp`, `aud` and `iss`;
- reads roles as Feast does: `resource_access.<client id>.roles` and top-level `roles`.

"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import requests
from feast.permissions.user import User

from feature_platform.auth.errors import FetchError, unauthorized
from feature_platform.auth.tokens import (
    VERIFIED_CACHE_S,
    TokenVerifier,
    VerifiedCache,
    user_from_claims,
)
from feature_platform.config.auth import AuthSettings
from feature_platform.errors import unavailable

log = logging.getLogger("feature_platform.auth")

ALGORITHM = "RS256"
# Clock skew tolerated on exp/nbf/iat, as Feast's parser does.
LEEWAY_S = 10


class OidcVerifier(TokenVerifier):
    def __init__(
        self,
        settings: AuthSettings,
        min_refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.min_refresh_s = min_refresh_s
        self._clock = clock
        self._keys: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._inflight: concurrent.futures.Future[None] | None = None
        self._last_attempt = float("-inf")
        self._last_failed = False
        # one fetch at a time: a provider outage never piles up threads
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="oidc-keys")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._verified = VerifiedCache()
        self._session = requests.Session()
        self._session.verify = settings.ca_file or True

    # --- keys -------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._refresh_loop, name="oidc-refresh", daemon=True
            )
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            future = self._refresh()
            try:
                future.result()
                wait_s = self.settings.keys_cache_s
            except Exception:
                # retry sooner while the provider is failing; the old keys still serve
                wait_s = min(self.settings.keys_cache_s, 5.0)
            self._stop.wait(wait_s)

    def _refresh(self) -> concurrent.futures.Future[None]:
        """The refresh in flight, or a new one."""
        with self._lock:
            if self._inflight is None or self._inflight.done():
                self._last_attempt = self._clock()
                self._inflight = self._executor.submit(self._fetch)
            return self._inflight

    def _get_json(self, url: str) -> dict[str, Any]:
        timeout = self.settings.fetch_timeout_s
        try:
            response = self._session.get(url, timeout=(timeout, timeout))
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise FetchError(f"{url}: {type(exc).__name__}") from None
        if not isinstance(document, dict):
            raise FetchError(f"{url}: not a JSON object")
        return document

    def _fetch(self) -> None:
        try:
            discovery = self._get_json(self.settings.discovery_url)
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str):
                raise FetchError("the discovery document has no jwks_uri")
            keys = parse_jwks(self._get_json(jwks_uri))
        except FetchError as exc:
            self._last_failed = True
            log.warning("signing keys not refreshed, keeping %d cached: %s", len(self._keys), exc)
            raise
        self._last_failed = False
        if keys.keys() != self._keys.keys():
            log.info("signing keys now: %s", ", ".join(sorted(keys)) or "none")
        removed = self._keys.keys() - keys.keys()
        self._keys = keys
        if removed:
            # tokens signed by a withdrawn key stop working now, not when their entry expires
            self._verified.clear()

    def _unknown_key_future(self) -> concurrent.futures.Future[None]:
        """A refresh to wait on for a key not cached; 401 or 503 when none may start."""
        with self._lock:
            inflight = self._inflight
            recent = self._clock() - self._last_attempt < self.min_refresh_s
        if inflight is not None and not inflight.done():
            return inflight
        if recent:
            # do not let tokens with invented key ids drive fetches from the provider
            if self._last_failed:
                raise unavailable("the identity provider is unreachable; try again shortly")
            raise unauthorized("the token is signed with a key the identity provider does not list")
        return self._refresh()

    def _after_refresh(self, kid: str, outcome: BaseException | None) -> Any:
        if isinstance(outcome, TimeoutError | concurrent.futures.TimeoutError):
            raise unavailable(
                f"the identity provider did not answer within {self.settings.fetch_timeout_s:g}s"
            )
        key = self._keys.get(kid)
        if key is not None:
            return key
        if outcome is not None:
            raise unavailable("the identity provider is unreachable; try again shortly")
        raise unauthorized("the token is signed with a key the identity provider does not list")

    # --- tokens -----------------------------------------------------------------

    def _kid(self, token: str) -> str:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("the token is not a well-formed JWT") from None
        if header.get("alg") != ALGORITHM:
            raise unauthorized(f"the token must be signed with {ALGORITHM}")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise unauthorized("the token's header names no signing key (kid)")
        return kid

    def _verify(self, token: str, key: Any) -> User:
        settings = self.settings
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "aud", "iss"], "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("the token is not meant for this service (aud)") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("the token was not issued by the trusted issuer (iss)") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise unauthorized(f"the token is not valid ({type(exc).__name__})") from None
        user = user_from_claims(claims, settings.client_id)
        until = min(time.time() + VERIFIED_CACHE_S, float(claims["exp"]))
        self._verified.put(token, user, self._clock() + max(0.0, until - time.time()))
        return user

    def _known(self, token: str) -> tuple[User | None, str, Any]:
        """A user verified recently, or the token's key id and its cached key (None when
        the key is not known yet)."""
        cached = self._verified.get(token, self._clock())
        if cached is not None:
            return cached, "", None
        kid = self._kid(token)
        return None, kid, self._keys.get(kid)

    async def user_of(self, token: str) -> User:
        cached, kid, key = self._known(token)
        if cached is not None:
            return cached
        if key is None:
            outcome: BaseException | None = None
            try:
                async with asyncio.timeout(self.settings.fetch_timeout_s):
                    await asyncio.shield(asyncio.wrap_future(self._unknown_key_future()))
            except (TimeoutError, FetchError) as exc:
                outcome = exc
            key = self._after_refresh(kid, outcome)
        return self._verify(token, key)

    def user_of_blocking(self, token: str) -> User:
        cached, kid, key = self._known(token)
        if cached is not None:
            return cached
        if key is None:
            outcome: BaseException | None = None
            try:
                self._unknown_key_future().result(timeout=self.settings.fetch_timeout_s)
            except (concurrent.futures.TimeoutError, FetchError) as exc:
                outcome = exc
            key = self._after_refresh(kid, outcome)
        return self._verify(token, key)


def parse_jwks(document: Mapping[str, Any]) -> dict[str, Any]:
    """kid -> public key of the RS256 signing keys in a JWKS; others are skipped."""
    keys: dict[str, Any] = {}
    for jwk in document.get("keys") or []:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            continue
        try:
            keys[kid] = jwt.PyJWK(jwk, algorithm=ALGORITHM).key
        except jwt.PyJWTError:
            log.warning("skipping unusable signing key %s", kid)
    return keys
