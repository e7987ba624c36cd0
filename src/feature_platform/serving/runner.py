"""Run the feature server under gunicorn with uvicorn workers, in the foreground."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from typing import Any

from gunicorn.app.base import BaseApplication

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
        },
    }


def _child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class _Gunicorn(BaseApplication):
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options = {
            "bind": f"{s.host}:{s.port}",
            "workers": s.workers,
            "worker_class": "uvicorn_worker.UvicornWorker",
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
        for key, value in options.items():
            if key in self.cfg.settings:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from feature_platform.serving.app import create_app

        return create_app()


def serve(settings: ServerSettings) -> None:
    """Serve until SIGTERM; in-flight requests get the graceful timeout to finish."""
    metrics_dir = tempfile.mkdtemp(prefix="feature-server-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        _Gunicorn(settings).run()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
