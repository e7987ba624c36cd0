"""The platform's token verifier inside Feast's servers (registry, offline, UI, feature server).

Feast's servers find the caller through one process-wide auth manager: a token extractor
and a token parser. Both are replaced here. The parser is the platform's verifier
(deadlines, cached keys, `aud`/`iss` always checked, no intra-communication bypass);
the extractor reads the header of any of Feast's server kinds and never repeats it in an
error (Feast's says "Expected Bearer schema, found <header>"). Each server also gets a
front door that answers a failed authentication itself: HTTP 401/503 with a JSON body
`{"error", "detail"}`, gRPC UNAUTHENTICATED/UNAVAILABLE, Flight unauthenticated or
unavailable. Health checks stay open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import grpc
from feast.permissions.auth.token_extractor import TokenExtractor
from feast.permissions.auth.token_parser import TokenParser
from feast.permissions.security_manager import get_security_manager
from feast.permissions.user import User
from starlette.authentication import AuthenticationError

from feature_platform.auth.tokens import TokenVerifier, bearer_token
from feature_platform.auth.verifiers import verifier_for
from feature_platform.config.auth import AuthSettings
from feature_platform.errors import HTTPError
from feature_platform.feast_seam import auth as feast_auth

if TYPE_CHECKING:
    import pyarrow.flight as fl
    from feast import FeatureStore
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger("feature_platform.auth")


class HeaderExtractor(TokenExtractor):
    """The bearer token of a REST request, gRPC metadata or Flight headers."""

    def extract_access_token(self, **kwargs: Any) -> str:
        header: Any = None
        if "request" in kwargs:
            header = kwargs["request"].headers.get("authorization")
        else:
            found = kwargs.get("metadata") or kwargs.get("headers") or {}
            for name, value in found.items():
                if name.lower() == "authorization":
                    header = value[0] if isinstance(value, list) and value else value
                    break
        try:
            return bearer_token(header)
        except HTTPError as exc:
            raise AuthenticationError(exc.detail) from None


class VerifierParser(TokenParser):
    """Feast's parser interface over the platform's verifier."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    async def user_details_from_access_token(self, access_token: str) -> User:
        try:
            return await self.verifier.user_of(access_token)
        except HTTPError as exc:
            raise AuthenticationError(exc.detail) from None


_installed: tuple[AuthSettings, TokenVerifier] | None = None


def install(store: FeatureStore) -> TokenVerifier | None:
    """Start the verifier for the store's `auth:` block and make it Feast's parser. Call
    after Feast's own set-up (`feast_seam.auth.init_*_managers`), which it replaces. None under
    no_auth: Feast's allow-all manager stays."""
    global _installed
    settings = AuthSettings.from_feast(store.config.auth_config)
    if not settings.enabled:
        _installed = None
        return None
    # one verifier per process: the registry's gRPC and REST servers share its keys
    if _installed is None or _installed[0] != settings:
        verifier = verifier_for(settings)
        verifier.start()
        _installed = (settings, verifier)
    verifier = _installed[1]
    feast_auth.use_token_parser(VerifierParser(verifier), HeaderExtractor())
    return verifier


def installed() -> TokenVerifier | None:
    """The verifier `install` started in this process, if any."""
    return _installed[1] if _installed is not None else None


# --- HTTP (the registry's REST API, the UI) ------------------------------------------


def _json_error(exc: HTTPError) -> tuple[list[tuple[bytes, bytes]], bytes]:
    body = json.dumps(exc.body()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *exc.headers,
    ]
    return headers, body


class Authenticated:
    """Answers 401/503 for requests under `protected` that carry no valid token; the
    verified user is the security manager's current user for the wrapped app."""

    def __init__(
        self, app: ASGIApp, verifier: TokenVerifier, protected: Callable[[str], bool]
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.protected = protected

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.protected(scope["path"]):
            await self.app(scope, receive, send)
            return
        header = next((v for k, v in scope.get("headers", []) if k == b"authorization"), b"")
        try:
            user = await self.verifier.user(header)
        except HTTPError as exc:
            headers, body = _json_error(exc)
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        manager = get_security_manager()
        if manager is not None:
            manager.set_current_user(user)
        await self.app(scope, receive, send)


# --- gRPC (the registry server) -------------------------------------------------------

OPEN_GRPC_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
_GRPC_CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 503: grpc.StatusCode.UNAVAILABLE}


class GrpcAuthInterceptor(grpc.ServerInterceptor):
    """Verifies the caller of every call but health and reflection, in the call's own
    worker thread (never in the server's polling thread), and makes it the security
    manager's current user there."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.verifier = verifier

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_GRPC_SERVICES):
            return handler
        header = next(
            (v for k, v in details.invocation_metadata or () if k.lower() == "authorization"), ""
        )
        verifier = self.verifier

        def authenticated(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def run(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    user = verifier.user_blocking(header)
                except HTTPError as exc:
                    context.abort(
                        _GRPC_CODES.get(exc.status, grpc.StatusCode.UNAUTHENTICATED), exc.detail
                    )
                manager = get_security_manager()
                if manager is not None:
                    manager.set_current_user(user)
                return behavior(request, context)

            return run

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                authenticated(handler.unary_unary),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                authenticated(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


# --- Arrow Flight (the offline server) ------------------------------------------------


def flight_middleware(verifier: TokenVerifier) -> dict[str, fl.ServerMiddlewareFactory]:
    """Feast's `auth` middleware slot, verifying at the start of every call."""
    import pyarrow.flight as fl
    from feast.permissions.server.arrow import AuthorizationMiddleware

    class Verified(AuthorizationMiddleware):
        def __init__(self, access_token: str, user: User) -> None:
            super().__init__(access_token=access_token)
            self.user = user

        async def extract_user(self) -> User:
            return self.user

    class Factory(fl.ServerMiddlewareFactory):
        def start_call(self, info: Any, headers: MutableMapping[str, Any]) -> Verified:
            values: list[str] = next(
                (v for k, v in headers.items() if k.lower() == "authorization"), []
            )
            header = values[0] if values else ""
            try:
                user = verifier.user_blocking(header)
            except HTTPError as exc:
                if exc.status == 503:
                    raise fl.FlightUnavailableError(exc.detail) from None
                raise fl.FlightUnauthenticatedError(exc.detail) from None
            return Verified(bearer_token(header), user)

    return {"auth": Factory()}
