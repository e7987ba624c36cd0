"""Applying a rollout: guarded, serialized, and recorded as it really ended.

Apply takes a Postgres advisory lock in the environment's registry database, waits for
it for a bounded time (giving up is recorded as `lock_timeout`), plans again under it,
refuses breaking changes unless allowed, applies with Feast and checks that the registry
now matches the repository. The lock is held by a session of its own, so a killed apply
releases it with its connection.

Feast writes the registry first and removes deleted views' online data afterwards: an
apply that fails part-way can leave the registry changed and that data behind, and the
next plan then shows nothing to do. So a failed apply records which planned changes are
in the registry and which are not, and keeps the definitions of deleted views whose
online data may remain (`rollout_log`); the next apply re-applies what is missing,
removes that data, and fails until it could.

A new version of a view (`versions`: `customer_stats_v2` beside `customer_stats`) is
applied in two stages, so that no client reads it empty: first everything but the new
feature services that read it, then `backfill` loads and checks it, and only then are
those services registered. A failed backfill leaves them out (exit 1, naming the view);
the next apply finds them still to create and does the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from feature_platform.config import environments
from feature_platform.config.guard import one_line_error, redact
from feature_platform.console import Say
from feature_platform.errors import EXIT_BREAKING, EXIT_OK, PlatformError
from feature_platform.feast_seam import feature_store, patches
from feature_platform.rollouts import log as rollout_log
from feature_platform.rollouts import versions
from feature_platform.rollouts.diff import CREATE, Plan, service_dependencies
from feature_platform.rollouts.log import Entry, PendingCleanup
from feature_platform.rollouts.plan import (
    Planned,
    RolloutError,
    breaking_allowed,
    connect,
    differences,
    in_repo,
    logging_text,
    plan_in_repo,
    project_name,
    registry_state,
    settings,
    with_logging_changes,
)

LOCK_TIMEOUT_VAR = "APPLY_LOCK_TIMEOUT_SECONDS"
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0
# One key for "an apply is running"; the lock lives in each environment's registry database.
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"feature-platform:apply").digest()[:8], "big", signed=True
)


class LockTimeout(RolloutError):
    pass


# Loads new versions of views (new name, predecessor) and checks them; raises, naming the
# view and the reason, when one is not fit to serve. The checks layer provides it.
Backfill = Callable[[Any, Sequence[tuple[str, str]], Say], None]


def lock_timeout_seconds(values: Mapping[str, str]) -> float:
    raw = values.get(LOCK_TIMEOUT_VAR, "").strip()
    if not raw:
        return DEFAULT_LOCK_TIMEOUT_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if seconds < 0:
        raise RolloutError(f"{LOCK_TIMEOUT_VAR} must be a number of seconds, got {raw!r}")
    return seconds


# --- the lock ---------------------------------------------------------------------------------


def _lock_holder(conn: psycopg.Connection) -> str:
    unsigned = LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    row = conn.execute(
        "SELECT a.application_name, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
        "AND l.objsubid = 1 AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database())",
        (unsigned >> 32, unsigned & 0xFFFFFFFF),
    ).fetchone()
    if row is None:
        return "another session"
    return f"{row[0] or 'another session'} (connected {row[1]:%Y-%m-%d %H:%M:%S %Z})"


def acquire_lock(conn: psycopg.Connection, timeout: float, database: str, say: Say) -> None:
    """Take the apply lock on `conn`'s session, waiting at most `timeout` seconds."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
    if row and row[0]:
        return
    say(
        f"waiting up to {timeout:g}s for the apply lock in {database}: held by {_lock_holder(conn)}"
    )
    conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(timeout * 1000)}ms",))
    try:
        # lock_timeout 0 would wait forever: a zero timeout was answered by the try above.
        if timeout <= 0:
            raise psycopg.errors.LockNotAvailable("no wait")
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    except psycopg.errors.LockNotAvailable:
        raise LockTimeout(
            f"gave up after {timeout:g}s waiting for the apply lock in {database}: another "
            "apply is running; nothing was changed, retry when it has finished"
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', '0', false)")


# --- apply ------------------------------------------------------------------------------------


@dataclass
class Applied:
    plan: Plan
    outcome: str  # applied | completed | unchanged | refused (rollout_log's outcomes)
    log_id: int
    # Deleted views whose online data this apply removed, for this plan or an earlier one.
    cleanup_done: list[str] = field(default_factory=list)
    # Earlier deletions not cleaned up because the repository defines the view again.
    cleanup_kept: list[str] = field(default_factory=list)
    cleanup_pending: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return EXIT_BREAKING if self.outcome == rollout_log.REFUSED else EXIT_OK


class ApplyFailed(RolloutError):
    """An apply failed; its log entry says what landed and what the next apply completes."""


def apply(
    env: str, say: Say, lock_timeout: float | None = None, backfill: Backfill | None = None
) -> Applied:
    """Plan under the environment's apply lock, then apply unless refused; new versions
    of views are backfilled by `backfill` before the services that read them register
    (without one, an apply that adds such a view fails before changing anything)."""
    values = settings(env)
    timeout = lock_timeout_seconds(values) if lock_timeout is None else lock_timeout
    allowed = breaking_allowed(values)
    project = project_name(env)
    who = rollout_log.provenance(values, environments.feature_repo())
    database = values["REGISTRY_DB"]
    # Closing the connection releases the lock, on failure too.
    with connect(values, f"feature-platform apply {env} by {who.actor}") as conn:
        waiting_since = datetime.now(UTC)
        try:
            acquire_lock(conn, timeout, database, say)
        except LockTimeout as exc:
            rollout_log.ensure_tables(conn)
            entry = Entry(waiting_since, env, project, who, rollout_log.LOCK_TIMEOUT, None, allowed)
            entry.error = str(exc)
            rollout_log.record(conn, entry)
            raise
        say(f"{env}: holding the apply lock in {database}")
        rollout_log.ensure_tables(conn)
        entry = Entry(datetime.now(UTC), env, project, who, rollout_log.FAILED, None, allowed)
        with in_repo(values) as repo, tempfile.TemporaryDirectory() as scratch:
            return _apply_locked(conn, entry, values, repo, Path(scratch), say, backfill)


def _apply_locked(
    conn: psycopg.Connection,
    entry: Entry,
    values: Mapping[str, str],
    repo: Path,
    scratch: Path,
    say: Say,
    backfill: Backfill | None,
) -> Applied:
    project = entry.project
    state = registry_state(conn, project)
    pending = rollout_log.pending_cleanups(conn, project)
    try:
        planned = plan_in_repo(
            entry.environment, values, repo, state, read_only=False, scratch=scratch
        )
    except Exception as exc:
        raise _failed(conn, entry, values, None, pending, False, exc) from exc
    result = entry.plan = planned.plan
    if result.breaking and not entry.breaking_allowed:
        entry.outcome = rollout_log.REFUSED
        entry.cleanup_pending = _names(pending) or None
        return Applied(
            result, entry.outcome, rollout_log.record(conn, entry), [], [], _names(pending)
        )
    if not result.changes and not pending:
        entry.outcome = rollout_log.UNCHANGED
        return Applied(result, entry.outcome, rollout_log.record(conn, entry))

    feast_applied = False
    try:
        if result.changes:
            staged = new_versions(planned)
            if staged.views and backfill is None:
                raise RolloutError(
                    f"{', '.join(n for n, _ in staged.views)}: a new version needs a backfill"
                )
            if staged.views and backfill is not None:
                _apply_in_stages(planned, staged, backfill, say)
            else:
                _feast_apply(planned)
            feast_applied = True
            left = differences(planned)
            if left:
                raise RolloutError(
                    "the registry does not match the repository after apply: "
                    + "; ".join(" ".join(d) for d in sorted(left))
                )
        removed, kept = _complete_cleanups(planned, pending)
    except Exception as exc:
        raise _failed(conn, entry, values, planned, pending, feast_applied, exc) from exc
    entry.outcome = rollout_log.APPLIED if result.changes else rollout_log.COMPLETED
    entry.landed, entry.not_landed = [c.label for c in result.changes], []
    done = [view.name for _kind, view in planned.deleted_views] + _names(removed)
    entry.cleanup_done = done or None
    with conn.transaction():
        log_id = rollout_log.record(conn, entry)
        rollout_log.close_pending(conn, removed, log_id, "removed")
        rollout_log.close_pending(conn, kept, log_id, "kept")
    return Applied(result, entry.outcome, log_id, done, _names(kept))


@dataclass
class Staged:
    # (new view, the version it succeeds) for each new version of a view
    views: list[tuple[str, str]]
    # feature services created by this apply that read one of them: registered last
    held: list[str]


def new_versions(planned: Planned) -> Staged:
    """The views of the repository that are new versions of a view in the registry (new
    in this plan, or read by a service new in it), and the new services reading them."""
    store, contents = planned.store, planned.contents
    registered = {v.name for v in store.registry.list_feature_views(planned.plan.project)}
    created = {c.name for c in planned.plan.changes if c.action == CREATE}
    created_services = [
        s for s in contents.feature_services if s.name in created and s.name not in registered
    ]
    readers = service_dependencies([*contents.on_demand_feature_views, *created_services])
    views: list[tuple[str, str]] = []
    for view in contents.feature_views:
        old = versions.predecessor_in(view.name, registered)
        if old is not None and (view.name in created or readers.get(view.name)):
            views.append((view.name, old))
    held = sorted({s for name, _ in views for s in readers.get(name, set())})
    return Staged(views, held)


def _apply_in_stages(planned: Planned, staged: Staged, backfill: Backfill, say: Say) -> None:
    contents = planned.contents
    first = contents._replace(
        feature_services=[s for s in contents.feature_services if s.name not in staged.held]
    )
    names = ", ".join(n for n, _ in staged.views)
    held = ", ".join(staged.held) or "no service"
    say(f"new version(s) {names}: applying all but {held}, then backfilling")
    _feast_apply(Planned(planned.plan, planned.store, first, planned.deleted_views))
    try:
        backfill(planned.store, staged.views, say)
    except Exception as exc:
        reason = str(exc) if isinstance(exc, PlatformError) else one_line_error(exc, {})
        raise RolloutError(f"backfill failed: {reason}; {held} not registered") from exc
    if staged.held:
        say(f"registering {held}")
        _feast_apply(planned)


def _feast_apply(planned: Planned) -> None:
    from feast.diff.registry_diff import diff_between
    from feast.repo_operations import apply_total_with_repo_instance

    store = planned.store
    project = planned.plan.project
    with contextlib.redirect_stdout(sys.stderr):
        apply_total_with_repo_instance(
            store, project, store.registry, planned.contents, skip_source_validation=True
        )
    # What Feast's apply skips: a feature service whose only change is its logging_config.
    # The registry too keeps a stored object equal to the new one, by that same equality.
    for service in with_logging_changes(diff_between(store.registry, project, planned.contents)):
        compared = patches.compared_also_by(service, logging_text)
        store.registry.apply_feature_service(compared, project)


def _complete_cleanups(
    planned: Planned, pending: Sequence[PendingCleanup]
) -> tuple[list[PendingCleanup], list[PendingCleanup]]:
    """Remove the online data of views an earlier failed apply deleted, as Feast's apply
    does (the provider's update_infra with them as tables to delete). A view the
    repository defines again keeps its data: it may be new. Returns (removed, kept)."""
    if not pending:
        return [], []
    contents = planned.contents
    defined = {
        v.name
        for v in (
            *contents.feature_views,
            *contents.stream_feature_views,
            *contents.label_views,
            *contents.on_demand_feature_views,
        )
    }
    kept = [c for c in pending if c.view_name in defined]
    removed = [c for c in pending if c.view_name not in defined]
    if removed:
        with contextlib.redirect_stdout(sys.stderr):
            feature_store.provider(planned.store).update_infra(
                project=planned.plan.project,
                tables_to_delete=[_decode(c) for c in removed],
                tables_to_keep=[*contents.feature_views, *contents.stream_feature_views],
                entities_to_delete=[],
                entities_to_keep=list(contents.entities),
                partial=False,
            )
    return removed, kept


def _failed(
    conn: psycopg.Connection,
    entry: Entry,
    values: Mapping[str, str],
    planned: Planned | None,
    pending: Sequence[PendingCleanup],
    feast_applied: bool,
    exc: Exception,
) -> RolloutError:
    """Record a failed apply as it ended, and the error to raise for it."""
    if isinstance(exc, RolloutError):
        error = redact(str(exc), values)
    else:
        error = one_line_error(exc, values)
    entry.outcome, entry.error = rollout_log.FAILED, error
    new_pending: list[tuple[str, str, bytes]] = []
    if planned is not None:
        try:
            left: set[tuple[str, str, str]] | None = differences(planned)
        except Exception:
            left = None  # the registry cannot be read: what landed is unknown
        changes = planned.plan.changes
        if left is not None:
            entry.landed = [c.label for c in changes if c.key not in left]
            entry.not_landed = [c.label for c in changes if c.key in left]
        if feast_applied:
            # Feast's apply returned: it removed the online data of the views it deleted.
            entry.cleanup_done = [view.name for _kind, view in planned.deleted_views] or None
        else:
            # Feast removes online data after the registry: a deletion that landed (or may
            # have) may have left its data. Removing it again is harmless.
            new_pending = [
                (view.name, kind, view.to_proto().SerializeToString())
                for kind, view in planned.deleted_views
                if left is None or ("delete", kind, view.name) not in left
            ]
    entry.cleanup_pending = [name for name, _k, _d in new_pending] + _names(pending) or None
    try:
        with conn.transaction():
            log_id = rollout_log.record(conn, entry)
            rollout_log.add_pending(conn, entry.project, new_pending, log_id)
    except psycopg.Error:
        return RolloutError(f"{error} (not recorded: the registry database failed too)")
    what = f"; {entry.summary()}" if entry.plan is not None else ""
    todo = "; the next apply completes it" if entry.not_landed or entry.cleanup_pending else ""
    return ApplyFailed(f"{error}{what}{todo} (log id {log_id})")


def _names(cleanups: Sequence[PendingCleanup]) -> list[str]:
    return list(dict.fromkeys(c.view_name for c in cleanups))


def _decode(cleanup: PendingCleanup) -> Any:
    """A deleted view back from the definition kept for its clean-up."""
    from feast import FeatureView, StreamFeatureView
    from feast.labeling.label_view import LabelView
    from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
    from feast.protos.feast.core.LabelView_pb2 import LabelView as LabelViewProto
    from feast.protos.feast.core.StreamFeatureView_pb2 import (
        StreamFeatureView as StreamFeatureViewProto,
    )

    kinds: dict[str, tuple[Any, Any]] = {
        "feature view": (FeatureView, FeatureViewProto),
        "stream feature view": (StreamFeatureView, StreamFeatureViewProto),
        "label view": (LabelView, LabelViewProto),
    }
    view_class, proto_class = kinds[cleanup.object_type]
    return view_class.from_proto(proto_class.FromString(cleanup.definition))
