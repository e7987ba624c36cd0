"""The rollout commands: `plan`, `apply` and `rollout-log`, as CI and people run them.

Planning is `rollout_plan`, applying `rollout_apply`, the record of applies `rollout_log`,
and the plan itself (classification, JSON, markdown) `plan_diff`. This module turns their
results into output and exit codes: 0 done or nothing to do, 3 breaking (plan) or refused
(apply), 2 configuration, 1 anything else, each failure one line without secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from feature_platform.config.guard import one_line_error, redact
from feature_platform.console import Say
from feature_platform.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from feature_platform.rollouts import log as rollout_log
from feature_platform.rollouts import versions
from feature_platform.rollouts.apply import Applied, apply
from feature_platform.rollouts.diff import ALLOW_BREAKING_VAR, Plan
from feature_platform.rollouts.plan import RolloutError, connect, plan, readers, settings


def write_outputs(plan: Plan, json_path: Path | None, markdown_path: Path | None) -> None:
    for path, text in ((json_path, plan.to_json() + "\n"), (markdown_path, plan.markdown())):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def guarded(
    action: str, say: Say, body: Callable[[], int], bad_input: tuple[type[Exception], ...] = ()
) -> int:
    """Run `body`: a configuration error goes up (exit 2), `bad_input` is one line and exit
    2, any other failure one line and exit 1."""
    from feature_platform.config.guard import ConfigError

    try:
        return body()
    except ConfigError:
        raise
    except bad_input as exc:
        say(f"{action} failed: {redact(str(exc), os.environ)}")
        return EXIT_BAD_INPUT
    except RolloutError as exc:
        say(f"{action} failed: {redact(str(exc), os.environ)}")
    except Exception as exc:
        say(f"{action} failed: {one_line_error(exc, os.environ)}")
    return EXIT_FAILED


def cli_plan(env: str, json_path: Path | None, markdown_path: Path | None, say: Say) -> int:
    def body() -> int:
        result = plan(env)
        write_outputs(result, json_path, markdown_path)
        print(result.markdown(), end="", flush=True)
        counts = result.counts()
        say(f"{env}: {counts['safe']} safe and {counts['breaking']} breaking change(s)")
        return result.exit_code

    return guarded("plan", say, body)


def cli_apply(env: str, json_path: Path | None, lock_timeout: float | None, say: Say) -> int:
    def body() -> int:
        from feature_platform.checks.backfill import backfill

        done = apply(env, say, lock_timeout, backfill)
        write_outputs(done.plan, json_path, None)
        print(done.plan.markdown(), end="", flush=True)
        log = f"(log id {done.log_id})"
        if done.outcome == rollout_log.REFUSED:
            pending = (
                f"; online clean-up still pending: {', '.join(done.cleanup_pending)}"
                if done.cleanup_pending
                else ""
            )
            say(
                f"{env}: apply refused: breaking changes need {ALLOW_BREAKING_VAR}=true; "
                f"nothing was changed{pending} {log}"
            )
        elif done.outcome == rollout_log.UNCHANGED:
            say(f"{env}: registry already matches the repository {log}")
        elif done.outcome == rollout_log.COMPLETED:
            say(f"{env}: completed an earlier failed apply: {_cleanup_text(done)} {log}")
        else:
            extra = f"; {_cleanup_text(done)}" if done.cleanup_done or done.cleanup_kept else ""
            say(f"{env}: applied {done.plan.summary()}{extra} {log}")
        return done.exit_code

    return guarded("apply", say, body)


def _cleanup_text(done: Applied) -> str:
    parts = []
    if done.cleanup_done:
        parts.append(f"online data removed for {', '.join(done.cleanup_done)}")
    if done.cleanup_kept:
        parts.append(f"online data kept for {', '.join(done.cleanup_kept)} (defined again)")
    return "; ".join(parts)


def cli_log(env: str, limit: int, say: Say) -> int:
    def body() -> int:
        with connect(settings(env)) as conn:
            rows = rollout_log.read(conn, limit)
        print(json.dumps(rows, indent=2, default=str))
        return EXIT_OK

    return guarded("rollout-log", say, body)


def cli_readers(env: str, say: Say) -> int:
    """Each feature service's last read, as the feature servers recorded it, and whether
    an old version may be retired (a successor exists and it is quiet)."""

    def body() -> int:
        rows, record = readers(env)
        if record.unknown is not None:
            raise RolloutError(f"the record of reads cannot be read: {record.unknown}")
        quiet = versions.ago(record.quiet.total_seconds())
        print(f"{'feature service':<32} {'last read (UTC)':<20} {'ago':>6}  retire")
        for row in rows:
            if row.last_read is None:
                when, ago = "never", "-"
            else:
                when = datetime.fromtimestamp(row.last_read, UTC).strftime("%Y-%m-%d %H:%M:%S")
                ago = versions.ago(record.now - row.last_read)
            if row.successor is None:
                retire = "no: newest version"
            elif record.quiet_since(row.last_read):
                retire = f"yes: {row.successor} succeeds it, unread for {quiet}"
            elif row.last_read is None:
                retire = f"not yet: {record.too_young()}"
            else:
                retire = f"not yet: read within {quiet}"
            print(f"{row.service:<32} {when:<20} {ago:>6}  {retire}", flush=True)
        return EXIT_OK

    return guarded("rollout-readers", say, body)
