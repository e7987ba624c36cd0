"""Run the feature server under gunicorn with uvicorn workers, in the foreground."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from uvicorn_worker import UvicornWorker

from feature_platform.config import tls
from feature_platform.serving import lifecycle
from feature_platform.serving.protocol import bounded_read_protocol
from feature_platform.serving.settings import ServerSettings


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def logging_config(log_format: str) -> dict[str, Any]:
    formatter = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"handlers": ["main"], "level": "INFO"},
        # Access logs are off: request lines carry nothing the metrics lack.
        "loggers": {
            "gunicorn.error": {"handlers": ["main"], "level": "INFO", "propagate": False},
            "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
            # Feast's permission checks log two INFO lines per request on its own path
            "feast.permissions": {"level": "WARNING"},
        },
    }


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class FeatureServerWorker(UvicornWorker):
    """uvicorn's worker, reading requests through the protocol with a read timeout, and
    with TLS presenting the certificate files of the moment (tls.followed_context)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        protocol = bounded_read_protocol(ServerSettings.from_env().request_read_timeout_s)
        server_tls = tls.server_tls()
        followed = server_tls.uvicorn_options() if server_tls is not None else {}
        self.CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "http": protocol, **followed}
        super().__init__(*args, **kwargs)


class _DrainingArbiter(Arbiter):
    """gunicorn's master, draining on SIGTERM before it stops (see lifecycle.py).

    gunicorn itself closes the listener at once, resetting what the kernel had queued.
    SIGINT and SIGQUIT still stop at once.
    """

    drain_s = 0
    _drain_ends: float | None = None

    def handle_term(self) -> None:
        if self.drain_s <= 0:
            raise StopIteration
        if self._drain_ends is None:
            self.log.info("SIGTERM: not ready, draining for %ss", self.drain_s)
            lifecycle.start_draining()
            self._drain_ends = time.monotonic() + self.drain_s

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:
        if self._drain_ends is not None:
            timeout = max(0.0, min(timeout, self._drain_ends - time.monotonic()))
        signals: list[int] = super().wait_for_signals(timeout)
        return signals

    def manage_workers(self) -> None:
        if self._drain_ends is not None:
            # A worker that stops while draining (SIGTERM to the whole process group) is not
            # replaced; with none left, nothing can answer, so the drain ends early.
            if time.monotonic() >= self._drain_ends or not self.WORKERS:
                lifecycle.stop_accepting(listener.sock for listener in self.LISTENERS)
                raise StopIteration
            return
        super().manage_workers()


class _Gunicorn(BaseApplication):
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # Read once here, so a missing or mismatched file stops the master before any worker.
        self.tls = tls.server_tls()
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": f"{s.host}:{s.port}",
            "workers": s.workers,
            "worker_class": f"{__name__}.FeatureServerWorker",
            "keepalive": s.keepalive_s,
            "graceful_timeout": s.graceful_timeout_s,
            "timeout": max(30, s.graceful_timeout_s + 10),
            "max_requests": s.max_requests,
            "max_requests_jitter": s.max_requests // 10 if s.max_requests else 0,
            "accesslog": None,
            "logconfig_dict": logging_config(s.log_format),
            "child_exit": _child_exit,
            "worker_tmp_dir": tempfile.gettempdir(),
            "control_socket_disable": True,
        }
        if self.tls is not None:
            # HTTPS only: uvicorn's workers take these from gunicorn's ssl options.
            options.update(certfile=self.tls.cert_file, keyfile=self.tls.key_file)
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from feature_platform.serving.app import create_app

        return create_app()

    def run(self) -> None:
        arbiter = _DrainingArbiter(self)
        arbiter.drain_s = self.settings.drain_s
        try:
            arbiter.run()
        except RuntimeError as exc:  # as BaseApplication.run: gunicorn's start-up errors
            print(f"\nError: {exc}\n", file=sys.stderr)
            sys.exit(1)


def serve(settings: ServerSettings) -> None:
    """Serve until SIGTERM: drain, then in-flight requests get the graceful timeout."""
    metrics_dir = tempfile.mkdtemp(prefix="feature-server-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _Gunicorn(settings).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
