"""`feature-platform skew-check ENV`: the check's result as an exit code, a JSON file and a
Pushgateway push."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import numpy as np

from feature_platform.checks.skew import (
    DEFAULT_ROWS,
    PUSH_JOB,
    PUSHGATEWAY_URL_VAR,
    SERVER_URL_VAR,
    CheckError,
    Result,
    push_metrics,
    run,
    server_token,
)
from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError, one_line_error, redact
from feature_platform.config.urls import http_url, shown
from feature_platform.console import Say
from feature_platform.errors import EXIT_CHECK_FAILED, EXIT_CONSISTENT, EXIT_MISMATCH


def command(
    env: str,
    server_url: str | None,
    rows: int | None,
    seed: int | None,
    json_path: Path | None,
    pushgateway: str | None,
    say: Say,
) -> int:
    settings = feast_commands.prepare(env)
    rows = DEFAULT_ROWS if rows is None else rows
    url = http_url(
        server_url or settings.get(SERVER_URL_VAR, ""), "server", SERVER_URL_VAR, "--server-url"
    )
    gateway_value = pushgateway or settings.get(PUSHGATEWAY_URL_VAR, "")
    gateway = (
        http_url(gateway_value, "Pushgateway", PUSHGATEWAY_URL_VAR, "--pushgateway")
        if gateway_value.strip()
        else None
    )
    seed = secrets.randbelow(2**31) if seed is None else seed
    result: Result | None = None
    try:
        result = run(env, url, rows, seed, server_token(settings), say)
        code = EXIT_CONSISTENT if result.consistent else EXIT_MISMATCH
        print(result.report(), flush=True)
        output: dict[str, Any] = result.to_json()
    except ConfigError:
        raise
    except CheckError as exc:
        message = redact(str(exc), settings)
        say(f"skew check failed: {message}")
        code, output = (
            EXIT_CHECK_FAILED,
            {"environment": env, "consistent": False, "error": message},
        )
    except Exception as exc:
        message = one_line_error(exc, settings)
        say(f"skew check failed: {message}")
        code, output = (
            EXIT_CHECK_FAILED,
            {"environment": env, "consistent": False, "error": message},
        )
    if json_path is not None:
        json_path.write_text(json.dumps(output, indent=2, default=_json_value) + "\n")
    if gateway is not None:
        try:
            push_metrics(gateway, env, result)
            say(f"pushed the result to {shown(gateway)} (job {PUSH_JOB}, environment {env})")
        except CheckError as exc:
            say(f"skew check: {exc}")
            code = code or EXIT_CHECK_FAILED
    return code


def _json_value(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)
