"""Feature server settings, from FEATURE_SERVER_* environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from feature_platform.config.guard import ConfigError, positive_number

WRITE_MODES = ("off", "token", "open")
# A write token shorter than this is refused (at start) or ignored (a line of its file).
MIN_WRITE_TOKEN_CHARS = 16


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 6566
    # One worker per core: the request path is CPU-bound Python.
    workers: int = os.cpu_count() or 1
    keepalive_s: int = 30
    graceful_timeout_s: int = 20
    # After SIGTERM: not ready, yet still answering (Connection: close), for this long,
    # so clients and load balancers move away before the listener closes.
    drain_s: int = 5
    # A request's headers and body must arrive within this; slow or stalled clients
    # are closed instead of holding a connection for ever.
    request_read_timeout_s: float = 10.0
    # 0 = never recycle workers; Feast's default of 1000 causes latency spikes and resets.
    max_requests: int = 0
    registry_ttl_s: int = 60
    max_entities: int = 1_000
    max_body_bytes: int = 1_048_576
    # How long a request may wait on the online store before it gets a 503.
    store_timeout_s: float = 1.0
    # Requests one worker works on at once (health, readiness and metrics aside); past
    # it a request is answered 503 with Retry-After at once instead of queueing. 0: no bound.
    max_in_flight: int = 0
    # The longest work queued ahead of a request on its worker, in ms: the bound in use is
    # lowered to the requests whose CPU time fits (serving/saturation.py). 0: no wait bound.
    max_queue_wait_ms: int = 0
    # Writes (/push, /write-to-online-store, /materialize*) are off unless enabled.
    write_mode: str = "off"
    write_token: str = ""
    log_format: str = "json"
    # Served vectors of logged feature services (serving/vector_log.py): rows queued at
    # most, beyond which they are dropped, and how often the queue is written.
    served_vectors_queue_rows: int = 10_000
    served_vectors_flush_s: float = 5.0
    # Feast's own endpoints served as well as the platform's (contract.ENDPOINTS): exact
    # paths such as /materialize, or "all". None by default.
    feast_endpoints: frozenset[str] = frozenset()

    def serves_feast_path(self, path: str) -> bool:
        return "all" in self.feast_endpoints or path in self.feast_endpoints

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerSettings:
        env = os.environ if env is None else env
        defaults = cls()
        write_mode = env.get("FEATURE_SERVER_WRITE_MODE", defaults.write_mode) or "off"
        if write_mode not in WRITE_MODES:
            raise ConfigError(
                f"FEATURE_SERVER_WRITE_MODE must be one of {', '.join(WRITE_MODES)}, "
                f"got {write_mode!r}"
            )
        token = env.get("FEATURE_SERVER_WRITE_TOKEN", "")
        # One mechanism at a time: with identities, writes are decided by the caller's
        # roles (Feast's permissions), and `open` means open to every permitted caller.
        if write_mode == "token" and (env.get("AUTH_TYPE") or "no_auth") != "no_auth":
            raise ConfigError(
                "FEATURE_SERVER_WRITE_MODE=token works only with AUTH_TYPE=no_auth: with "
                "identities, writes are decided by permissions (use 'open' or 'off')"
            )
        if write_mode == "token" and len(token) < MIN_WRITE_TOKEN_CHARS:
            raise ConfigError(
                "FEATURE_SERVER_WRITE_MODE=token needs FEATURE_SERVER_WRITE_TOKEN "
                f"(or FEATURE_SERVER_WRITE_TOKEN_FILE) of at least {MIN_WRITE_TOKEN_CHARS} "
                "characters"
            )
        log_format = env.get("FEATURE_SERVER_LOG_FORMAT", defaults.log_format) or "json"
        if log_format not in ("json", "text"):
            raise ConfigError(f"FEATURE_SERVER_LOG_FORMAT must be json or text, got {log_format!r}")
        feast_endpoints = frozenset(
            p.strip() for p in env.get("FEATURE_SERVER_FEAST_ENDPOINTS", "").split(",") if p.strip()
        )
        bad = sorted(p for p in feast_endpoints if p != "all" and not p.startswith("/"))
        if bad:
            raise ConfigError(
                "FEATURE_SERVER_FEAST_ENDPOINTS takes paths starting with / or 'all', "
                f"got {', '.join(bad)}"
            )
        return cls(
            host=env.get("FEATURE_SERVER_HOST", defaults.host) or defaults.host,
            port=_int(env, "FEATURE_SERVER_PORT", defaults.port, minimum=1),
            workers=_int(env, "FEATURE_SERVER_WORKERS", defaults.workers, minimum=1),
            keepalive_s=_int(env, "FEATURE_SERVER_KEEPALIVE_SECONDS", defaults.keepalive_s),
            graceful_timeout_s=_int(
                env, "FEATURE_SERVER_GRACEFUL_TIMEOUT_SECONDS", defaults.graceful_timeout_s
            ),
            drain_s=_int(env, "FEATURE_SERVER_DRAIN_SECONDS", defaults.drain_s),
            request_read_timeout_s=positive_number(
                env, "FEATURE_SERVER_REQUEST_READ_TIMEOUT_SECONDS", defaults.request_read_timeout_s
            ),
            max_requests=_int(env, "FEATURE_SERVER_MAX_REQUESTS", defaults.max_requests),
            registry_ttl_s=_int(
                env, "FEATURE_SERVER_REGISTRY_TTL_SECONDS", defaults.registry_ttl_s, minimum=1
            ),
            max_entities=_int(env, "FEATURE_SERVER_MAX_ENTITIES", defaults.max_entities, 1),
            max_body_bytes=_int(env, "FEATURE_SERVER_MAX_BODY_BYTES", defaults.max_body_bytes, 1),
            store_timeout_s=positive_number(
                env, "FEATURE_SERVER_STORE_TIMEOUT_SECONDS", defaults.store_timeout_s
            ),
            max_in_flight=_int(env, "FEATURE_SERVER_MAX_IN_FLIGHT", defaults.max_in_flight),
            max_queue_wait_ms=_int(
                env, "FEATURE_SERVER_MAX_QUEUE_WAIT_MS", defaults.max_queue_wait_ms
            ),
            write_mode=write_mode,
            write_token=token,
            log_format=log_format,
            feast_endpoints=feast_endpoints,
            served_vectors_queue_rows=_int(
                env,
                "FEATURE_SERVER_SERVED_VECTORS_QUEUE_ROWS",
                defaults.served_vectors_queue_rows,
                minimum=1,
            ),
            served_vectors_flush_s=positive_number(
                env, "FEATURE_SERVER_SERVED_VECTORS_FLUSH_SECONDS", defaults.served_vectors_flush_s
            ),
        )
