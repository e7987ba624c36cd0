"""Planning a rollout: what applying the feature repository would change in an environment.

Plan reads the registry and never writes it: its registry connection runs every
transaction read-only (`default_transaction_read_only`), Feast's table creation is
skipped, and a registry that was never applied is compared as an empty one instead of
being initialized (Feast's own `feast plan` creates the tables and a project row there).

The pieces here (the environment's settings, the repository imported under them, Feast's
configuration, the registry database) are also what `rollout_apply` plans again with,
under its lock, before it applies.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from feature_platform.config import environments, feast_commands
from feature_platform.config.guard import one_line_error, redact
from feature_platform.errors import PlatformError
from feature_platform.offline import tables as offline_tables
from feature_platform.rollouts import versions
from feature_platform.rollouts.diff import ALLOW_BREAKING_VAR, VERSIONED_TYPES, Plan, classify

# Registry tables that hold objects of a project; used to tell "never applied" from
# "half initialized".
_OBJECT_TABLES = (
    "entities",
    "data_sources",
    "feature_views",
    "feature_services",
    "on_demand_feature_views",
    "stream_feature_views",
    "permissions",
)
# Views whose online data Feast removes when apply deletes them (its `tables_to_delete`).
ONLINE_VIEW_TYPES = ("feature view", "stream feature view", "label view")


class RolloutError(PlatformError):
    """A rollout problem, phrased for one line of output (exit code 1)."""


def breaking_allowed(values: Mapping[str, str]) -> bool:
    return values.get(ALLOW_BREAKING_VAR, "").strip().lower() in ("1", "true", "yes")


# --- the environment, the repository and Feast's configuration -----------------------------


def settings(env: str) -> dict[str, str]:
    values = feast_commands.prepare(env)
    if "REGISTRY_DB" not in values:
        raise RolloutError(
            f"{env}: plan and apply need a PostgreSQL registry (REGISTRY_DB); "
            f"use `feature-platform feast {env} -- apply` for an embedded environment"
        )
    return values


def project_name(env: str) -> str:
    raw = yaml.safe_load(environments.feature_store_yaml(env).read_text())
    return str(raw["project"])


def _repo_modules(repo: Path) -> set[str]:
    return {
        ".".join(p.relative_to(repo).with_suffix("").parts)
        for p in repo.rglob("*.py")
        if p.name != "__init__.py"
    }


@contextlib.contextmanager
def in_repo(values: Mapping[str, str]) -> Iterator[Path]:
    """The environment's settings in os.environ (definitions read them at import), the
    repository as working directory and import root, and fresh imports of its modules
    (so that one process can plan two copies of the repository)."""
    repo = environments.feature_repo()
    saved_cwd, saved_path = os.getcwd(), list(sys.path)
    for name in _repo_modules(repo):
        sys.modules.pop(name, None)
    with environments.in_environ(values):
        os.chdir(repo)
        sys.path.insert(0, str(repo))
        try:
            yield repo
        finally:
            os.chdir(saved_cwd)
            sys.path[:] = saved_path


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


def connect(values: Mapping[str, str], application: str = "feature-platform") -> psycopg.Connection:
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


# --- planning -------------------------------------------------------------------------------


@dataclass
class Planned:
    """A plan with what applying it needs: Feast's store and the repository's objects."""

    plan: Plan
    store: Any
    contents: Any
    # (object type, the registry's copy) of each view the plan deletes: its online keys
    # derive from that copy, which is gone from the registry once the deletion landed.
    deleted_views: list[tuple[str, Any]]


def logging_text(service: Any) -> str:
    """A feature service's logging_config as text; empty without one."""
    config = service.logging_config
    return str(config.to_proto()) if config is not None else ""


def with_logging_changes(registry_diff: Any) -> list[Any]:
    """Feast compares feature services without their `logging_config`
    (`FeatureService.__eq__`), so turning served-vector logging on or off for a service
    that exists would be planned as no change and never applied. Each such service
    becomes an update of `logging_config` here; returns the services to write."""
    from feast.diff.property_diff import PropertyDiff, TransitionType
    from feast.diff.registry_diff import FeastObjectDiff
    from feast.infra.registry.registry import FeastObjectType

    updated = []
    for i, d in enumerate(registry_diff.feast_object_diffs):
        if (
            d.feast_object_type != FeastObjectType.FEATURE_SERVICE
            or d.transition_type != TransitionType.UNCHANGED
        ):
            continue
        old, new = logging_text(d.current_feast_object), logging_text(d.new_feast_object)
        if old != new:
            registry_diff.feast_object_diffs[i] = FeastObjectDiff(
                d.name,
                d.feast_object_type,
                d.current_feast_object,
                d.new_feast_object,
                [PropertyDiff("logging_config", old, new)],
                TransitionType.UPDATE,
            )
            updated.append(d.new_feast_object)
    return updated


def differences(planned: Planned) -> set[tuple[str, str, str]]:
    """(action, object type, name) of every object where the registry and the repository
    still differ; empty once the registry holds the repository."""
    from feast.diff.property_diff import TransitionType
    from feast.diff.registry_diff import diff_between
    from feast.feature_view import DUMMY_ENTITY_NAME

    diff = diff_between(planned.store.registry, planned.plan.project, planned.contents)
    with_logging_changes(diff)
    return {
        (d.transition_type.name.lower(), d.feast_object_type.value, d.name)
        for d in diff.feast_object_diffs
        if d.transition_type != TransitionType.UNCHANGED and d.name != DUMMY_ENTITY_NAME
    }


def read_readers(store: Any, values: Mapping[str, str]) -> versions.Readers:
    """When each service was last read, from the online store's record; a record that
    cannot be read is `unknown`, with the reason (no secret in it)."""
    from feature_platform.feast_seam import feature_store

    now, quiet = time.time(), versions.quiet_period(values)
    online = feature_store.provider(store).online_store
    last_reads = getattr(online, "last_reads", None)
    if last_reads is None:
        return versions.Readers(now, quiet, unknown=f"{type(online).__name__} keeps no record")
    try:
        services, views, since = last_reads(store.config)
    except Exception as exc:
        return versions.Readers(now, quiet, unknown=one_line_error(exc, values))
    return versions.Readers(now, quiet, services, views, since=since)


def plan_in_repo(
    env: str, values: Mapping[str, str], repo: Path, state: str, *, read_only: bool, scratch: Path
) -> Planned:
    from feast import FeatureStore
    from feast.diff.property_diff import TransitionType

    from feature_platform.feast_seam import feature_store

    registry_path = f"sqlite:///{scratch / 'empty_registry.db'}" if state == "empty" else None
    config = _repo_config(
        env, repo, read_only=read_only, registry_path=registry_path if read_only else None
    )
    # Feast prints progress to stdout, which carries the summary.
    with contextlib.redirect_stdout(sys.stderr):
        try:
            contents = feature_store.repo_contents(repo, config.project, config)
        except SystemExit:
            raise RolloutError(f"Feast could not read the feature repository {repo}") from None
        store = FeatureStore(config=config)
        provider = feature_store.provider(store)
        for view in contents.feature_views:
            if view.batch_source is not None:
                provider.validate_data_source(store.config, view.batch_source)
        registry_diff, _infra_diff, _ = store.plan(contents)
    with_logging_changes(registry_diff)
    deleted_views: list[tuple[str, Any]] = [
        (str(d.feast_object_type.value), d.current_feast_object)
        for d in registry_diff.feast_object_diffs
        if d.transition_type == TransitionType.DELETE
        and d.feast_object_type.value in ONLINE_VIEW_TYPES
    ]
    # The record of reads decides only whether deleting an old version is a retirement.
    deletes_versioned = any(
        d.transition_type == TransitionType.DELETE and d.feast_object_type.value in VERSIONED_TYPES
        for d in registry_diff.feast_object_diffs
    )
    readers = read_readers(store, values) if deletes_versioned else None
    changes = classify(registry_diff, readers)
    plan = Plan(env, config.project, state, changes, breaking_allowed(values))
    return Planned(plan, store, contents, deleted_views)


@dataclass(frozen=True)
class Reader:
    """One feature service of the registry and when the feature servers last read it."""

    service: str
    last_read: float | None
    # the newest later version of it in the registry, when there is one
    successor: str | None


def readers(env: str) -> tuple[list[Reader], versions.Readers]:
    """Every feature service of `env`'s registry with its last read, oldest version first."""
    from feature_platform.feast_seam import registry as feast_registry

    values = settings(env)
    store = feast_commands.open_store(env)
    try:
        record = read_readers(store, values)
        names = sorted(
            s.name for s in store.registry.list_feature_services(store.project, allow_cache=False)
        )
    finally:
        feast_registry.release(store)
    rows = [
        Reader(name, record.last_read([name]), versions.successor_in(name, names))
        for name in sorted(names, key=versions.parse)
    ]
    return rows, record


def plan(env: str) -> Plan:
    """What applying the repository would change in `env`. Never writes the registry."""
    values = settings(env)
    project = project_name(env)
    with connect(values, f"feature-platform plan {env}") as conn:
        state = registry_state(conn, project)
    with in_repo(values) as repo, tempfile.TemporaryDirectory() as scratch:
        return plan_in_repo(env, values, repo, state, read_only=True, scratch=Path(scratch)).plan
