"""The registry server: Feast's gRPC registry service, and its REST API, read-only.

Definitions change only through the rollout (`feature-platform apply`), so every call
that would change the registry is refused here, whatever the `auth` mode: gRPC with
PERMISSION_DENIED, REST with 403 and a JSON body. The refusal runs before Feast's own
interceptors and routes, so no permission or identity can let a write through.

Feast's `serve_registry --rest-api` cannot start with the FastAPI this project locks:
its `RestRegistryServer` passes `default_status_code` and `default_headers` to
`FastAPI()`, keywords FastAPI never had, which older releases swallowed into `**extra`
and 0.165 refuses. Its app is therefore built here from Feast's own pieces (routes,
error handlers, auth), without those keywords and without Feast's visit-logging
middleware, which writes every visited object to the registry's project metadata.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    from feast import FeatureStore
    from starlette.types import ASGIApp

from feast.protos.feast.registry import RegistryServer_pb2, RegistryServer_pb2_grpc

from feature_platform.config.tls import ServerTls, server_tls
from feature_platform.console import Say
from feature_platform.feast_seam import auth as feast_auth
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.servers import authentication
from feature_platform.servers.read_only import ReadOnly

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6570
DEFAULT_REST_PORT = 6572
SERVICE = RegistryServer_pb2.DESCRIPTOR.services_by_name["RegistryServer"]
# Reads, and Refresh (it reloads the server's cached copy; it changes no definition).
READ_METHODS = frozenset(
    m.name for m in SERVICE.methods if m.name.startswith(("Get", "List")) or m.name == "Proto"
) | {"Refresh"}
REFUSED_DETAIL = "the registry is read-only here: definitions change through the rollout"


def _refuse(request: bytes, context: grpc.ServicerContext) -> None:
    context.abort(grpc.StatusCode.PERMISSION_DENIED, REFUSED_DETAIL)


class ReadOnlyInterceptor(grpc.ServerInterceptor):
    """Refuses every RegistryServer method that is not a read, before anything else runs."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        service, _, method = details.method.rpartition("/")
        if service == f"/{SERVICE.full_name}" and method not in READ_METHODS:
            logger.warning("refused registry call %s", method)
            return grpc.unary_unary_rpc_method_handler(_refuse)
        return continuation(details)


@dataclass
class GrpcRegistry:
    server: grpc.Server
    health: health.HealthServicer
    port: int

    def serving(self) -> None:
        for name in ("", SERVICE.full_name):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace_s: float) -> None:
        # Health first, so probes and clients see the server going before it goes.
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait()


def grpc_server(
    store: FeatureStore, host: str, port: int, workers: int = 10, tls: ServerTls | None = None
) -> GrpcRegistry:
    """Feast's registry servicer behind the read-only interceptor, then Feast's own
    (auth, error mapping); the gRPC health service; reflection. TLS only when `tls`."""
    from feast.grpc_error_interceptor import ErrorInterceptor
    from feast.registry_server import RegistryServer

    auth_type = feast_auth.init_grpc_managers(store)
    # With identities, the platform's verifier replaces Feast's parser and interceptor
    # (servers/authentication.py); Feast's error mapping stays.
    verifier = authentication.install(store)
    interceptors: list[grpc.ServerInterceptor] = [ReadOnlyInterceptor()]
    if verifier is None:
        interceptors += feast_registry.grpc_interceptors(auth_type)
    else:
        interceptors += [authentication.GrpcAuthInterceptor(verifier), ErrorInterceptor()]
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=interceptors,
        # gRPC shares a port with any other listener by default (SO_REUSEPORT): a second
        # server on a taken port would start and split the calls instead of failing.
        options=[("grpc.so_reuseport", 0)],
    )
    RegistryServer_pb2_grpc.add_RegistryServerServicer_to_server(
        RegistryServer(store.registry, store=store), server
    )
    checker = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    reflection.enable_server_reflection(
        (SERVICE.full_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if tls is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", tls.grpc_credentials())
    except RuntimeError:
        bound = 0
    if not bound:
        raise OSError(f"cannot listen on {host}:{port} (in use?)")
    server.start()
    # NOT_SERVING until the caller has every listener up (see GrpcRegistry.serving).
    checker.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    return GrpcRegistry(server, checker, bound)


def rest_app(store: FeatureStore) -> ASGIApp:
    """Feast's REST registry API (under /api/v1), read-only."""
    from fastapi import Depends, FastAPI
    from feast.permissions.server.rest import inject_user_details
    from starlette.applications import Starlette
    from starlette.routing import Mount

    # Feast's class supplies the routes, handlers and auth set-up; its __init__ is the
    # part that fails (see the module docstring), so the seam assembles the instance.
    feast_app = feast_registry.rest_registry_app(
        store,
        FastAPI(
            title="Feast REST Registry Server (read-only)",
            dependencies=[Depends(inject_user_details)],
            version="1.0.0",
            openapi_url="/openapi.json",
            docs_url=None,
            redoc_url=None,
        ),
    )
    # Under /api/v1, where Feast's UI and clients look (Feast's `root_path` is deprecated).
    app: ASGIApp = Starlette(routes=[Mount("/api/v1", app=feast_app)])
    # after Feast's auth set-up, whose parser this replaces; inside the read-only refusal,
    # which no identity gets past
    verifier = authentication.install(store)
    if verifier is not None:
        app = authentication.Authenticated(app, verifier, lambda path: True)
    return ReadOnly(app, REFUSED_DETAIL)


class RestRegistry:
    """uvicorn serving `rest_app` in a thread of this process."""

    def __init__(
        self, store: FeatureStore, host: str, port: int, tls: ServerTls | None = None
    ) -> None:
        import uvicorn

        config = uvicorn.Config(
            rest_app(store),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **(tls.uvicorn_options() if tls else {}),
        )
        self.server = uvicorn.Server(config)
        # uvicorn installs no signal handlers outside the main thread: the caller stops it.
        self.thread = threading.Thread(target=self.server.run, name="rest-registry", daemon=True)

    def start(self, timeout_s: float = 30) -> None:
        self.thread.start()
        waited = 0.0
        while not self.server.started:
            if not self.thread.is_alive() or waited > timeout_s:
                raise OSError("the REST registry server did not start (see the log above)")
            self.thread.join(0.05)
            waited += 0.05

    def stop(self, timeout_s: float) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve(
    store: FeatureStore,
    host: str,
    port: int,
    rest_port: int | None,
    say: Say,
    grace_s: float = 10,
) -> None:
    """Serve until SIGTERM/SIGINT: gRPC on `port`, REST on `rest_port` when given."""
    from feature_platform.servers.lifecycle import run_until_signalled

    tls = server_tls()
    registry = grpc_server(store, host, port, tls=tls)
    rest = None
    if rest_port is not None:
        rest = RestRegistry(store, host, rest_port, tls)
        try:
            rest.start()
        except OSError:
            registry.stop(0)
            raise
    registry.serving()
    say(
        f"registry server (read-only) for project {store.project}: gRPC on {host}:{port}"
        + (f", REST on {host}:{rest_port}/api/v1" if rest else "")
        + (" (TLS)" if tls else "")
    )

    def stop() -> None:
        if rest is not None:
            rest.stop(grace_s)
        registry.stop(grace_s)
        say("registry server stopped")

    run_until_signalled(stop, say)
