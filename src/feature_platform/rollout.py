"""Rollouts of the feature repository to an environment: plan, and guarded, serialized apply.

Plan reads the registry and never writes it: its registry connection runs every
transaction read-only (`default_transaction_read_only`), Feast's table creation is
skipped, and a registry that was never applied is compared as an empty one instead of
being initialized (Feast's own `feast plan` creates the tables and a project row there).

Apply takes a Postgres advisory lock in the environment's registry database, waits for
it for a bounded time, plans again under the lock, refuses breaking changes unless
allowed, applies with Feast, checks that the registry now matches the repository, records
the outcome in `platform_apply_log` and releases the lock. The lock is held by a session
of its own, so a killed apply releases it with its connection.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

from feature_platform import environments, feast_commands, offline_tables
from feature_platform.config_guard import one_line_error, redact
from feature_platform.plan_diff import EXIT_BREAKING, EXIT_FAILED, EXIT_OK, Plan, classify

ALLOW_BREAKING_VAR = "ALLOW_BREAKING_CHANGES"
LOCK_TIMEOUT_VAR = "APPLY_LOCK_TIMEOUT_SECONDS"
DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0
ACTOR_VAR = "APPLY_ACTOR"
LOG_TABLE = "platform_apply_log"
# One key for "an apply is running"; the lock lives in each environment's registry database.
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"feature-platform:apply").digest()[:8], "big", signed=True
)

# Registry tables that hold objects of a project; used to tell "never applied" from
# "half initialized".
_OBJECT_TABLES = (
    "entities",
    "data_sources",
    "feature_views",
    "feature_services",
    "on_demand_feature_views",
    "stream_feature_views",
)

Say = Callable[[str], None]


class RolloutError(Exception):
    """A rollout problem, phrased for one line of output (exit code 1)."""


class LockTimeout(RolloutError):
    pass


def breaking_allowed(values: Mapping[str, str]) -> bool:
    return values.get(ALLOW_BREAKING_VAR, "").strip().lower() in ("1", "true", "yes")


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


# --- the environment, the repository and Feast's configuration -----------------------------


def _settings(env: str) -> dict[str, str]:
    values = feast_commands.prepare(env)
    if "REGISTRY_DB" not in values:
        raise RolloutError(
            f"{env}: plan and apply need a PostgreSQL registry (REGISTRY_DB); "
            f"use `feature-platform feast {env} -- apply` for an embedded environment"
        )
    return values


def _repo_modules(repo: Path) -> set[str]:
    return {
        ".".join(p.relative_to(repo).with_suffix("").parts)
        for p in repo.rglob("*.py")
        if p.name != "__init__.py"
    }


@contextlib.contextmanager
def _in_repo(values: Mapping[str, str]) -> Iterator[Path]:
    """The environment's settings in os.environ (definitions read them at import), the
    repository as working directory and import root, and fresh imports of its modules
    (so that one process can plan two copies of the repository)."""
    repo = environments.feature_repo()
    saved_environ, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    for name in _repo_modules(repo):
        sys.modules.pop(name, None)
    os.environ.update(values)
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    try:
        yield repo
    finally:
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        os.environ.clear()
        os.environ.update(saved_environ)


def _repo_config(env: str, repo: Path, *, read_only: bool, registry_path: str | None = None) -> Any:
    """Feast's RepoConfig for `env`, with the registry set up for a short-lived process:
    reads of what to change go to the database, not to a cache."""
    from feast.repo_config import RepoConfig

    yaml_path = environments.feature_store_yaml(env)
    raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    registry = raw.get("registry")
    if not isinstance(registry, dict) or registry.get("registry_type") != "sql":
        raise RolloutError(f"{yaml_path.name}: plan and apply need `registry_type: sql`")
    if registry_path is not None:
        registry = {"registry_type": "sql", "path": registry_path}
    # No background refresh thread (with thread mode and ttl 0, Feast's exit handler fails).
    registry["cache_mode"] = "sync"
    registry["cache_ttl_seconds"] = 0
    if read_only and registry_path is None:
        registry["schema_mode"] = "skip"
        kwargs = registry.setdefault("sqlalchemy_config_kwargs", {})
        connect_args = kwargs.setdefault("connect_args", {})
        options = f"{connect_args.get('options', '')} -c default_transaction_read_only=on"
        connect_args["options"] = options.strip()
    raw["registry"] = registry
    config = RepoConfig(**raw)
    config.repo_path = repo
    return config


# --- the registry database ------------------------------------------------------------------


def _connect(
    values: Mapping[str, str], application: str = "feature-platform"
) -> psycopg.Connection:
    conninfo = offline_tables.postgres_conninfo(values, values["REGISTRY_DB"])
    try:
        return psycopg.connect(conninfo, autocommit=True, application_name=application[:63])
    except psycopg.Error as exc:
        raise RolloutError(
            f"cannot connect to registry database {values['REGISTRY_DB']}: "
            f"{redact(str(exc).strip().splitlines()[0], values)}"
        ) from None


def registry_state(conn: psycopg.Connection, project: str) -> str:
    """ "initialized" once an apply created the project, "empty" before any."""
    tables = {
        row[0]
        for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }

    def has_row(table: str, condition: str = "project_id = %s") -> bool:
        if table not in tables:
            return False
        query = f"SELECT 1 FROM {table} WHERE {condition} LIMIT 1"
        return conn.execute(query, (project,)).fetchone() is not None

    if has_row("projects"):
        return "initialized"
    if any(has_row(t) for t in _OBJECT_TABLES):
        raise RolloutError(
            f"the registry holds objects of project {project!r} but no project row; "
            "inspect it before rolling out"
        )
    return "empty"


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


def ensure_log_table(conn: psycopg.Connection) -> None:
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
    conn.execute(
        f"COMMENT ON TABLE {LOG_TABLE} IS 'One row per feature-platform apply: "
        "who, what, when, and the outcome (applied, unchanged, refused, failed)'"
    )


@dataclass
class Provenance:
    actor: str
    source_ref: str | None
    run_url: str | None


def provenance(values: Mapping[str, str], repo: Path) -> Provenance:
    actor = values.get(ACTOR_VAR) or values.get("GITHUB_ACTOR") or getpass.getuser()
    ref = values.get("GITHUB_SHA") or _git_ref(repo)
    run_url = None
    if all(values.get(k) for k in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")):
        run_url = (
            f"{values['GITHUB_SERVER_URL']}/{values['GITHUB_REPOSITORY']}/actions/runs/"
            f"{values['GITHUB_RUN_ID']}"
        )
    return Provenance(actor, ref, run_url)


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


def _record(
    conn: psycopg.Connection,
    *,
    started: datetime,
    env: str,
    project: str,
    who: Provenance,
    outcome: str,
    plan: Plan | None,
    allowed: bool,
    error: str | None = None,
) -> int:
    counts = plan.counts() if plan else {}
    summary = (
        ", ".join(f"{n} {k}" for k, n in counts.items() if k in ("created", "updated", "deleted"))
        if plan
        else "no plan"
    )
    row = conn.execute(
        f"INSERT INTO {LOG_TABLE} (started_at, environment, project, actor, source_ref, "
        "run_url, outcome, breaking, breaking_allowed, summary, plan, error) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s) RETURNING id",
        (
            started,
            env,
            project,
            who.actor,
            who.source_ref,
            who.run_url,
            outcome,
            bool(plan and plan.breaking),
            allowed,
            summary,
            plan.to_json() if plan else None,
            error,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


# --- plan and apply ---------------------------------------------------------------------------


@dataclass
class Planned:
    plan: Plan
    store: Any
    contents: Any


def _plan_in_repo(
    env: str, values: Mapping[str, str], repo: Path, state: str, *, read_only: bool, scratch: Path
) -> Planned:
    from feast import FeatureStore
    from feast.repo_operations import _get_repo_contents

    registry_path = f"sqlite:///{scratch / 'empty_registry.db'}" if state == "empty" else None
    config = _repo_config(
        env, repo, read_only=read_only, registry_path=registry_path if read_only else None
    )
    # Feast prints progress to stdout, which carries the summary.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            contents = _get_repo_contents(repo, config.project, config)
        except SystemExit:
            raise RolloutError(f"Feast could not read the feature repository {repo}") from None
        store = FeatureStore(config=config)
        provider = store._get_provider()
        for view in contents.feature_views:
            if view.batch_source is not None:
                provider.validate_data_source(store.config, view.batch_source)
        registry_diff, _infra_diff, _ = store.plan(contents)
    plan = Plan(env, config.project, state, classify(registry_diff), breaking_allowed(values))
    return Planned(plan, store, contents)


def plan(env: str, say: Say | None = None) -> Plan:
    """What applying the repository would change in `env`. Never writes the registry."""
    values = _settings(env)
    project = _project(env)
    with _connect(values, f"feature-platform plan {env}") as conn:
        state = registry_state(conn, project)
    with _in_repo(values) as repo, tempfile.TemporaryDirectory() as scratch:
        return _plan_in_repo(env, values, repo, state, read_only=True, scratch=Path(scratch)).plan


def _project(env: str) -> str:
    raw = yaml.safe_load(environments.feature_store_yaml(env).read_text())
    return str(raw["project"])


@dataclass
class Applied:
    plan: Plan
    outcome: str  # applied | unchanged | refused
    log_id: int

    @property
    def exit_code(self) -> int:
        return EXIT_BREAKING if self.outcome == "refused" else EXIT_OK


def apply(env: str, say: Say, lock_timeout: float | None = None) -> Applied:
    """Plan under the environment's apply lock, then apply unless refused."""
    from feast.diff.property_diff import TransitionType
    from feast.diff.registry_diff import diff_between
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import apply_total_with_repo_instance

    values = _settings(env)
    timeout = lock_timeout_seconds(values) if lock_timeout is None else lock_timeout
    allowed = breaking_allowed(values)
    project = _project(env)
    who = provenance(values, environments.feature_repo())
    database = values["REGISTRY_DB"]
    with _connect(values, f"feature-platform apply {env} by {who.actor}") as conn:
        acquire_lock(conn, timeout, database, say)
        started = datetime.now(UTC)
        say(f"{env}: holding the apply lock in {database}")
        ensure_log_table(conn)
        planned: Planned | None = None
        try:
            state = registry_state(conn, project)
            with _in_repo(values) as repo, tempfile.TemporaryDirectory() as scratch:
                planned = _plan_in_repo(
                    env, values, repo, state, read_only=False, scratch=Path(scratch)
                )
                result = planned.plan
                if not result.changes:
                    outcome = "unchanged"
                elif result.breaking and not allowed:
                    outcome = "refused"
                else:
                    with contextlib.redirect_stdout(sys.stderr):
                        apply_total_with_repo_instance(
                            planned.store,
                            project,
                            planned.store.registry,
                            planned.contents,
                            skip_source_validation=True,
                        )
                        left = [
                            f"{d.transition_type.name.lower()} {d.feast_object_type.value} {d.name}"
                            for d in diff_between(
                                planned.store.registry, project, planned.contents
                            ).feast_object_diffs
                            if d.transition_type != TransitionType.UNCHANGED
                            and d.name != DUMMY_ENTITY_NAME
                        ]
                    if left:
                        raise RolloutError(
                            "the registry does not match the repository after apply: "
                            + "; ".join(left)
                        )
                    outcome = "applied"
        except Exception as exc:
            message = redact(f"{type(exc).__name__}: {exc}".strip().splitlines()[0], values)
            _record(
                conn,
                started=started,
                env=env,
                project=project,
                who=who,
                outcome="failed",
                plan=planned.plan if planned else None,
                allowed=allowed,
                error=message,
            )
            raise
        log_id = _record(
            conn,
            started=started,
            env=env,
            project=project,
            who=who,
            outcome=outcome,
            plan=result,
            allowed=allowed,
        )
        conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return Applied(result, outcome, log_id)


def apply_log(env: str, limit: int = 20) -> list[dict[str, Any]]:
    """The latest entries of `env`'s apply log, newest first."""
    values = _settings(env)
    with _connect(values) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (LOG_TABLE,)).fetchone()
        if not exists or exists[0] is None:
            return []
        cur = conn.execute(
            f"SELECT id, started_at, finished_at, environment, actor, source_ref, run_url, "
            f"outcome, breaking, breaking_allowed, summary, error FROM {LOG_TABLE} "
            "ORDER BY id DESC LIMIT %s",
            (limit,),
        )
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def write_outputs(plan: Plan, json_path: Path | None, markdown_path: Path | None) -> None:
    for path, text in ((json_path, plan.to_json() + "\n"), (markdown_path, plan.markdown())):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)


def dumps_log(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, default=str)


# --- the command line -------------------------------------------------------------------------


def _guarded(action: str, say: Say, body: Callable[[], int]) -> int:
    """Run `body`: a configuration error goes up (exit 2), any other failure is one line."""
    from feature_platform.config_guard import ConfigError

    try:
        return body()
    except ConfigError:
        raise
    except RolloutError as exc:
        say(f"{action} failed: {redact(str(exc), os.environ)}")
    except Exception as exc:
        say(f"{action} failed: {one_line_error(exc, os.environ)}")
    return EXIT_FAILED


def cli_plan(env: str, json_path: Path | None, markdown_path: Path | None, say: Say) -> int:
    def body() -> int:
        result = plan(env, say)
        write_outputs(result, json_path, markdown_path)
        print(result.markdown(), end="", flush=True)
        counts = result.counts()
        say(f"{env}: {counts['safe']} safe and {counts['breaking']} breaking change(s)")
        return result.exit_code

    return _guarded("plan", say, body)


def cli_apply(env: str, json_path: Path | None, lock_timeout: float | None, say: Say) -> int:
    def body() -> int:
        done = apply(env, say, lock_timeout)
        write_outputs(done.plan, json_path, None)
        print(done.plan.markdown(), end="", flush=True)
        if done.outcome == "refused":
            say(
                f"{env}: apply refused: breaking changes need {ALLOW_BREAKING_VAR}=true; "
                f"nothing was changed (log id {done.log_id})"
            )
        elif done.outcome == "unchanged":
            say(f"{env}: registry already matches the repository (log id {done.log_id})")
        else:
            counts = done.plan.counts()
            say(
                f"{env}: applied {counts['created']} created, {counts['updated']} updated, "
                f"{counts['deleted']} deleted (log id {done.log_id})"
            )
        return done.exit_code

    return _guarded("apply", say, body)


def cli_log(env: str, limit: int, say: Say) -> int:
    def body() -> int:
        print(dumps_log(apply_log(env, limit)))
        return EXIT_OK

    return _guarded("rollout-log", say, body)
