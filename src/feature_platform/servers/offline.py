"""The offline server: Feast's Arrow Flight server over the environment's offline store.

Training sets built through it follow the platform's point-in-time rule: Feast's remote
store never sends `filter_by_created_timestamp`, and this server calls the configured
store (feature_platform.stores.*_offline) without it, so the store's default, the
platform's rule, applies (see stores/training_rule.py).

Reads only. Writes through Flight (`offline_write_batch`, `write_logged_features`,
`persist`) are refused, whatever the `auth` mode: rows reach the offline tables through
the feature server's /push (which stamps their creation time) or the platform's writers,
never from a client without credentials.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.flight as fl
from feast.offline_server import OfflineServer

from feature_platform.config.tls import ServerTls, server_tls
from feature_platform.console import Say
from feature_platform.feast_seam import auth as feast_auth
from feature_platform.servers import authentication

if TYPE_CHECKING:
    from feast import FeatureStore

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8815
WRITE_APIS = frozenset({"offline_write_batch", "write_logged_features", "persist"})
REFUSED_DETAIL = (
    "the offline server is read-only: push rows through the feature server's /push instead"
)


class ReadOnlyOfflineServer(OfflineServer):
    """Feast's offline server with its write APIs refused."""

    def _call_api(self, api: str, command: dict[str, Any], key: Any) -> None:
        if api in WRITE_APIS:
            self.flights.pop(key, None)
            logger.warning("refused offline call %s", api)
            raise fl.FlightUnauthorizedError(REFUSED_DETAIL)
        super()._call_api(api, command, key)

    def list_actions(self, context: fl.ServerCallContext) -> list[tuple[str, str]]:
        return []

    def arrow_flight_auth_middleware(self, auth_type: Any) -> dict[str, fl.ServerMiddlewareFactory]:
        # With identities: the platform's verifier (installed by flight_server), checking
        # every call as it starts.
        verifier = authentication.installed()
        if verifier is None:
            return super().arrow_flight_auth_middleware(auth_type)
        return authentication.flight_middleware(verifier)


def flight_server(
    store: FeatureStore, host: str, port: int, tls: ServerTls | None = None
) -> ReadOnlyOfflineServer:
    """Listening once constructed (Arrow Flight binds in the constructor); TLS only when
    `tls` is given."""
    feast_auth.init_arrow_managers(store)
    authentication.install(store)
    scheme = "grpc+tls" if tls else "grpc+tcp"
    certificates = tls.flight_certificates() if tls else []
    try:
        return ReadOnlyOfflineServer(
            store, location=f"{scheme}://{host}:{port}", host=host, tls_certificates=certificates
        )
    except pa.ArrowException as exc:  # Flight says only "Server did not start properly"
        raise OSError(f"cannot listen on {host}:{port} (in use?)") from exc


def serve(store: FeatureStore, host: str, port: int, say: Say) -> None:
    """Serve until SIGTERM/SIGINT."""
    from feature_platform.servers.lifecycle import run_until_signalled

    tls = server_tls()
    server = flight_server(store, host, port, tls)
    offline_type = type(server.offline_store)
    scheme = "grpc+tls" if tls else "grpc+tcp"
    say(
        f"offline server (read-only) for project {store.project} on {scheme}://{host}:{port}, "
        f"store {offline_type.__module__}.{offline_type.__name__}"
    )

    def stop() -> None:
        server.shutdown()
        say("offline server stopped")

    run_until_signalled(stop, say)
