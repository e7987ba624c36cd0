"""The offline server: Feast's Arrow Flight server over the environment's offline store.

Training sets built through it follow the platform's point-in-time rule: Feast's remote
store never sends `filter_by_created_timestamp`, and this server calls the configured
store (feature_platform.stores.*_offline) without it, so the store's default, the
platform's rule, applies (see stores/training_rule.py).

Training sets run through the platform's fast engine where it applies (the same join as
the `training-set` command, given by the command that starts the server as `fast_join`),
through Feast's join elsewhere; one log line per request says which, and why.

Reads only. Writes through Flight (`offline_write_batch`, `write_logged_features`,
`persist`) are refused, whatever the `auth` mode: rows reach the offline tables through
the feature server's /push (which stamps their creation time) or the platform's writers,
never from a client without credentials.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.flight as fl
from feast.arrow_error_handler import arrow_server_error_handling_decorator
from feast.offline_server import OfflineServer
from feast.permissions.action import AuthzedAction
from feast.permissions.security_manager import assert_permissions
from feast.permissions.server.arrow import inject_user_details_decorator

from feature_platform import console
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


HISTORICAL = "get_historical_features"
# (store, the client's command, its labels) -> the training set, or why the platform's
# engine does not apply to it (Feast's join then answers).
FastJoin = Callable[["FeatureStore", dict[str, Any], pa.Table], "pa.Table | str"]


class ReadOnlyOfflineServer(OfflineServer):
    """Feast's offline server with its write APIs refused and its training sets built by
    `fast_join` where it applies."""

    def __init__(
        self,
        store: FeatureStore,
        fast_join: FastJoin | None = None,
        say: Say = console.say,
        **kwargs: Any,
    ):
        super().__init__(store, **kwargs)
        self.fast_join = fast_join
        self.say = say

    @inject_user_details_decorator
    @arrow_server_error_handling_decorator
    def do_exchange(
        self,
        context: fl.ServerCallContext,
        descriptor: fl.FlightDescriptor,
        reader: fl.MetadataRecordBatchReader,
        writer: fl.MetadataRecordBatchWriter,
    ) -> None:
        """Feast's client sends every read as one exchange: the command, then the labels."""
        command = json.loads(descriptor.command)
        if command.get("api") != HISTORICAL:
            return super().do_exchange(context, descriptor, reader, writer)
        started = time.monotonic()
        labels = reader.read_all()
        views = self.list_feature_views_by_name(
            command["feature_view_names"], command["name_aliases"], command["project"]
        )
        for view in views:
            assert_permissions(resource=view, actions=[AuthzedAction.READ_OFFLINE])
        answer = self.fast_join(self.store, command, labels) if self.fast_join else "not given"
        if isinstance(answer, pa.Table):
            path = "platform engine"
        else:
            path = f"Feast's join ({answer})"
            answer = self._feast_join(command, labels)
        self.say(
            f"training set: {path}, {labels.num_rows:,} labels, "
            f"{len(command['feature_refs'])} features, {time.monotonic() - started:.2f}s"
        )
        writer.begin(answer.schema)
        for batch in answer.to_batches(max_chunksize=64_000):
            writer.write_batch(batch)
        return None

    def _feast_join(self, command: dict[str, Any], labels: pa.Table) -> pa.Table:
        """Feast's own path, as it answers a two-step put and get."""
        key = f"exchange-{uuid.uuid4()}"
        self.flights[key] = labels
        try:
            return self.get_historical_features(command, key).to_arrow()
        finally:
            self.flights.pop(key, None)

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
    store: FeatureStore,
    host: str,
    port: int,
    tls: ServerTls | None = None,
    fast_join: FastJoin | None = None,
    say: Say = console.say,
) -> ReadOnlyOfflineServer:
    """Listening once constructed (Arrow Flight binds in the constructor); TLS only when
    `tls` is given."""
    feast_auth.init_arrow_managers(store)
    authentication.install(store)
    scheme = "grpc+tls" if tls else "grpc+tcp"
    certificates = tls.flight_certificates() if tls else []
    try:
        return ReadOnlyOfflineServer(
            store,
            fast_join,
            say,
            location=f"{scheme}://{host}:{port}",
            host=host,
            tls_certificates=certificates,
        )
    except pa.ArrowException as exc:  # Flight says only "Server did not start properly"
        raise OSError(f"cannot listen on {host}:{port} (in use?)") from exc


def serve(
    store: FeatureStore, host: str, port: int, say: Say, fast_join: FastJoin | None = None
) -> None:
    """Serve until SIGTERM/SIGINT."""
    from feature_platform.servers.lifecycle import run_until_signalled

    tls = server_tls()
    server = flight_server(store, host, port, tls, fast_join, say)
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
