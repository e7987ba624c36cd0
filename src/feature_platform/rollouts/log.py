"""What applies did, kept in the environment's registry database.

`platform_apply_log`: one row per apply (who, which commit, when, the plan, the outcome
and, for a failed apply, which planned changes reached the registry and which did not).

`platform_online_cleanup`: views an apply deleted from the registry whose online data it
could not confirm removed (Feast removes it after writing the registry, so a failure
there leaves the registry changed and the data behind). The registry no longer knows such
a view, so its definition is kept here: the next apply removes the data and closes the
row, and fails until it could.
"""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from feature_platform.rollouts.diff import Plan

ACTOR_VAR = "APPLY_ACTOR"
LOG_TABLE = "platform_apply_log"
CLEANUP_TABLE = "platform_online_cleanup"

APPLIED = "applied"  # the plan's changes are in the registry, their online clean-up done
COMPLETED = "completed"  # nothing to change, but an earlier failed apply's clean-up is done
UNCHANGED = "unchanged"
REFUSED = "refused"  # breaking and not allowed: nothing changed
FAILED = "failed"
LOCK_TIMEOUT = "lock_timeout"  # gave up waiting for another apply: nothing changed
OUTCOMES = (APPLIED, COMPLETED, UNCHANGED, REFUSED, FAILED, LOCK_TIMEOUT)


def ensure_tables(conn: psycopg.Connection) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
            id bigserial PRIMARY KEY,
            started_at timestamptz NOT NULL,
            finished_at timestamptz NOT NULL DEFAULT now(),
            environment text NOT NULL,
            project text NOT NULL,
            actor text NOT NULL,
            source_ref text,
            run_url text,
            outcome text NOT NULL,
            breaking boolean NOT NULL,
            breaking_allowed boolean NOT NULL,
            summary text NOT NULL,
            plan jsonb,
            error text
        )"""
    )
    # Added after the first release: logs created before lack them. Checked first, as
    # ALTER TABLE locks out readers of the log even when it changes nothing.
    present = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (LOG_TABLE,),
        )
    }
    for column in ("landed", "not_landed", "cleanup_done", "cleanup_pending"):
        if column not in present:
            conn.execute(f"ALTER TABLE {LOG_TABLE} ADD COLUMN IF NOT EXISTS {column} text[]")
    conn.execute(
        f"COMMENT ON TABLE {LOG_TABLE} IS 'One row per feature-platform apply: who, what, "
        f"when, and the outcome ({', '.join(OUTCOMES)}); landed and not_landed: the "
        "planned changes found in the registry afterwards and those not; cleanup_done and "
        "cleanup_pending: deleted views whose online data was removed and is still to remove'"
    )
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {CLEANUP_TABLE} (
            id bigserial PRIMARY KEY,
            project text NOT NULL,
            view_name text NOT NULL,
            object_type text NOT NULL,
            definition bytea NOT NULL,
            recorded_by bigint NOT NULL REFERENCES {LOG_TABLE} (id),
            closed_by bigint REFERENCES {LOG_TABLE} (id),
            closed_as text
        )"""
    )
    conn.execute(
        f"COMMENT ON TABLE {CLEANUP_TABLE} IS 'Views deleted from the registry whose online "
        "data is still to remove (closed_by NULL); definition: the registry proto of the view'"
    )


@dataclass
class Provenance:
    actor: str
    source_ref: str | None
    run_url: str | None


def actor(values: Mapping[str, str]) -> str:
    """Who runs the command: APPLY_ACTOR, else GITHUB_ACTOR, else the user."""
    return values.get(ACTOR_VAR) or values.get("GITHUB_ACTOR") or getpass.getuser()


def provenance(values: Mapping[str, str], repo: Path) -> Provenance:
    ref = values.get("GITHUB_SHA") or _git_ref(repo)
    run_url = None
    if all(values.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")):
        run_url = (
            f"{values['GITHUB_SERVER_URL']}/{values['GITHUB_REPOSITORY']}/actions/runs/"
            f"{values['GITHUB_RUN_ID']}"
        )
    return Provenance(actor(values), ref, run_url)


def _git_ref(repo: Path) -> str | None:
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    head = git("rev-parse", "HEAD")
    if not head:
        return None
    return f"{head}-dirty" if git("status", "--porcelain", "--", ".") else head


@dataclass
class Entry:
    """One apply, as the log keeps it."""

    started: datetime
    environment: str
    project: str
    who: Provenance
    outcome: str
    plan: Plan | None
    breaking_allowed: bool
    error: str | None = None
    # None: not known (no plan, or the registry could not be read after a failure).
    landed: list[str] | None = None
    not_landed: list[str] | None = None
    cleanup_done: list[str] | None = None
    cleanup_pending: list[str] | None = None

    def summary(self) -> str:
        if self.plan is None:
            return "no plan"
        text = self.plan.summary()
        if self.outcome == FAILED and self.landed is not None and self.plan.changes:
            text += f"; {len(self.landed)} of {len(self.plan.changes)} in the registry"
        if self.cleanup_done:
            text += f"; online data removed: {', '.join(self.cleanup_done)}"
        if self.cleanup_pending:
            text += f"; online clean-up pending: {', '.join(self.cleanup_pending)}"
        return text


def record(conn: psycopg.Connection, entry: Entry) -> int:
    row = conn.execute(
        f"INSERT INTO {LOG_TABLE} (started_at, environment, project, actor, source_ref, "
        "run_url, outcome, breaking, breaking_allowed, summary, plan, error, landed, "
        "not_landed, cleanup_done, cleanup_pending) VALUES "
        "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s) RETURNING id",
        (
            entry.started,
            entry.environment,
            entry.project,
            entry.who.actor,
            entry.who.source_ref,
            entry.who.run_url,
            entry.outcome,
            bool(entry.plan and entry.plan.breaking),
            entry.breaking_allowed,
            entry.summary(),
            entry.plan.to_json() if entry.plan else None,
            entry.error,
            entry.landed,
            entry.not_landed,
            entry.cleanup_done,
            entry.cleanup_pending,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def read(conn: psycopg.Connection, limit: int) -> list[dict[str, Any]]:
    """The latest entries, newest first; none before the first apply."""
    exists = conn.execute("SELECT to_regclass(%s)", (LOG_TABLE,)).fetchone()
    if not exists or exists[0] is None:
        return []
    cur = conn.execute(
        f"SELECT id, started_at, finished_at, environment, actor, source_ref, run_url, "
        f"outcome, breaking, breaking_allowed, summary, error, landed, not_landed, "
        f"cleanup_done, cleanup_pending FROM {LOG_TABLE} ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


# --- online clean-up still to do ----------------------------------------------------------


@dataclass
class PendingCleanup:
    id: int
    view_name: str
    object_type: str
    definition: bytes


def pending_cleanups(conn: psycopg.Connection, project: str) -> list[PendingCleanup]:
    rows = conn.execute(
        f"SELECT id, view_name, object_type, definition FROM {CLEANUP_TABLE} "
        "WHERE project = %s AND closed_by IS NULL ORDER BY id",
        (project,),
    ).fetchall()
    return [PendingCleanup(int(i), name, kind, bytes(blob)) for i, name, kind, blob in rows]


def add_pending(
    conn: psycopg.Connection, project: str, views: Sequence[tuple[str, str, bytes]], log_id: int
) -> None:
    """(name, object type, definition) of views whose online data is still to remove."""
    for name, object_type, definition in views:
        conn.execute(
            f"INSERT INTO {CLEANUP_TABLE} (project, view_name, object_type, definition, "
            "recorded_by) VALUES (%s, %s, %s, %s, %s)",
            (project, name, object_type, definition, log_id),
        )


def close_pending(
    conn: psycopg.Connection, cleanups: Sequence[PendingCleanup], log_id: int, closed_as: str
) -> None:
    """closed_as: "removed" (the data is gone) or "kept" (the view exists again)."""
    if cleanups:
        conn.execute(
            f"UPDATE {CLEANUP_TABLE} SET closed_by = %s, closed_as = %s WHERE id = ANY(%s)",
            (log_id, closed_as, [c.id for c in cleanups]),
        )
