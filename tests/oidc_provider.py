"""A stand-in OIDC identity provider for tests: discovery document, JWKS, RS256 tokens.

It runs an HTTP server in a thread of the test process, serving
`/.well-known/openid-configuration` and `/jwks`, and mints tokens with chosen roles,
audience, issuer, expiry and key. It can rotate to a new signing key, be stopped (the
port refuses connections) and started again on the same port, or stall (accept
requests and answer none until released), as a provider that hangs does.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

DISCOVERY_PATH = "/.well-known/openid-configuration"
CLIENT_ID = "feast-platform"
AUDIENCE = "feast-platform"
# How long a stalled request is held at most, so a test that forgets to release it
# cannot hang the run.
STALL_LIMIT_S = 60.0


def send_json(handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
    """A 200 with a JSON body; a client that gave up waiting (a stalled test) is not an
    error, as it is not for a real server."""
    data = json.dumps(body).encode()
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(data)))
    handler.end_headers()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        handler.wfile.write(data)


def new_key() -> RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SigningKey:
    kid: str
    private: RSAPrivateKey

    def jwk(self) -> dict[str, Any]:
        entry: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key())
        )
        entry.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        return entry


class OidcProvider:
    """`with OidcProvider() as idp:` serves on 127.0.0.1 until the block ends."""

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self.keys: list[SigningKey] = [SigningKey(f"k-{secrets.token_hex(4)}", new_key())]
        self.requests: list[str] = []
        self._released = threading.Event()
        self._released.set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- life ---------------------------------------------------------------------

    def __enter__(self) -> OidcProvider:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.release()
        self.stop()

    def start(self) -> OidcProvider:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                provider.requests.append(self.path)
                provider._released.wait(STALL_LIMIT_S)
                if self.path == DISCOVERY_PATH:
                    body = provider.discovery()
                elif self.path == "/jwks":
                    body = {"keys": [key.jwk() for key in provider.keys]}
                else:
                    self.send_error(404)
                    return
                send_json(self, body)

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        server.daemon_threads = True
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="oidc-provider", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: connections are refused until `start`."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stall(self) -> None:
        """Hold every request from now on without an answer, until `release`."""
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    # --- what it serves -----------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def issuer(self) -> str:
        return f"{self.url}/realms/feast"

    @property
    def discovery_url(self) -> str:
        return f"{self.url}{DISCOVERY_PATH}"

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "jwks_uri": f"{self.url}/jwks",
            "authorization_endpoint": f"{self.url}/auth",
            "token_endpoint": f"{self.url}/token",
            "id_token_signing_alg_values_supported": ["RS256"],
        }

    def settings(self, fetch_timeout_s: float = 1.0) -> dict[str, str]:
        """The platform's environment settings for this provider."""
        return {
            "AUTH_TYPE": "oidc",
            "OIDC_DISCOVERY_URL": self.discovery_url,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_AUDIENCE": AUDIENCE,
            "OIDC_ISSUER": self.issuer,
            "AUTH_FETCH_TIMEOUT_SECONDS": str(fetch_timeout_s),
        }

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """A new signing key, listed from now on (with the old ones when `keep_old`)."""
        key = SigningKey(f"k-{secrets.token_hex(4)}", new_key())
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def token(
        self,
        roles: Sequence[str] = (),
        client_roles: Sequence[str] = (),
        *,
        username: str = "alice",
        audience: str | None = AUDIENCE,
        issuer: str | None = None,
        expires_in_s: float = 300,
        key: SigningKey | None = None,
        kid: str | None = None,
        signed_by: RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        """An RS256 token. `roles` go in the top-level claim, `client_roles` in
        `resource_access.<client id>.roles`; `signed_by` signs with another private key
        while still naming `kid` (a forged signature); `audience=None` leaves `aud` out."""
        key = key or self.keys[-1]
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": f"user-{username}",
            "preferred_username": username,
            "iss": issuer if issuer is not None else self.issuer,
            "iat": now,
            "exp": now + int(expires_in_s),
            **claims,
        }
        if audience is not None:
            payload["aud"] = audience
        if roles:
            payload["roles"] = list(roles)
        if client_roles:
            payload["resource_access"] = {CLIENT_ID: {"roles": list(client_roles)}}
        return jwt.encode(
            payload,
            signed_by or key.private,
            algorithm="RS256",
            headers={"kid": kid or key.kid},
        )


def fetches(provider: OidcProvider, since: int = 0) -> Iterator[str]:
    """The paths requested from `provider` since the `since`-th request."""
    yield from provider.requests[since:]
