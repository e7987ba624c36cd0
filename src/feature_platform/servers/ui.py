"""The Feast UI: Feast's React app and its REST registry API (under /api/v1), read-only.

Feast's UI server (feast.ui_server) serves, beside the pages, routes that change things
with no credential asked under `auth: no_auth`: POST and DELETE of entities, views,
services, data sources, permissions and saved datasets (straight into the registry), and
label pushes into the stores. Here every request but GET, HEAD and OPTIONS is refused
with 403 and a JSON body before Feast's app sees it; the one POST let through is the
page's "refresh" button (/api/v1/registry/refresh), which reloads this server's cached
copy of the registry and changes no definition. Definitions change through the rollout
(`feature-platform apply`) only.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import TYPE_CHECKING

from feature_platform.config.tls import ServerTls, server_tls
from feature_platform.console import Say
from feature_platform.servers import authentication
from feature_platform.servers.read_only import ReadOnly

if TYPE_CHECKING:
    from feast import FeatureStore
    from starlette.types import ASGIApp

DEFAULT_PORT = 8888
REFRESH = frozenset({("POST", "/api/v1/registry/refresh")})
REFUSED_DETAIL = "the Feast UI is read-only here: definitions change through the rollout"


def ui_app(store: FeatureStore) -> ASGIApp:
    """Feast's UI app for the store's project (no CORS: the pages call their own origin)."""
    from feast.ui_server import get_app

    app: ASGIApp = get_app(store, project_id=store.project)
    # The pages and /health are open (the browser signs in through the identity
    # provider, then calls the API with its token); the API needs a token. Inside the
    # read-only refusal, which no identity gets past.
    verifier = authentication.install(store)
    if verifier is not None:
        app = authentication.Authenticated(app, verifier, _needs_token)
    return ReadOnly(app, REFUSED_DETAIL, REFRESH)


def _needs_token(path: str) -> bool:
    return path.startswith("/api/") or path == "/projects-list.json"


class UiServer:
    """uvicorn serving `ui_app` in a thread of this process, so stopping the command
    stops the server: there is no child process to leave behind."""

    def __init__(
        self, store: FeatureStore, host: str, port: int, tls: ServerTls | None = None
    ) -> None:
        import uvicorn

        # Bound here, so a taken port is an OSError naming it, not a log line in a thread.
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self.socket = socket.create_server((host, port), family=family)
        except OSError as exc:
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise OSError(f"cannot listen on {host}:{port}: {reason}") from exc
        config = uvicorn.Config(
            ui_app(store),
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=10,
            **(tls.uvicorn_options() if tls else {}),
        )
        self.server = uvicorn.Server(config)
        # uvicorn installs no signal handlers outside the main thread: `stop` ends it.
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, name="feast-ui", daemon=True
        )

    def start(self, timeout_s: float = 30) -> None:
        self.thread.start()
        waited = 0.0
        while not self.server.started:
            if not self.thread.is_alive() or waited > timeout_s:
                self.socket.close()
                raise OSError("the Feast UI did not start (see the log above)")
            self.thread.join(0.05)
            waited += 0.05

    def stop(self, timeout_s: float = 15) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        self.socket.close()


def serve(store: FeatureStore, host: str, port: int, say: Say) -> None:
    """Serve until SIGTERM/SIGINT."""
    from feature_platform.servers.lifecycle import run_until_signalled

    tls = server_tls()
    server = UiServer(store, host, port, tls)
    server.start()
    scheme = "https" if tls else "http"
    say(f"Feast UI (read-only) for project {store.project} on {scheme}://{host}:{port}/")

    def stop() -> None:
        server.stop()
        say("Feast UI stopped")

    run_until_signalled(stop, say)
