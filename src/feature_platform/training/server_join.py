"""The offline server's training sets: a thin client's `get_historical_features` through
the fast engine (`engine`), under the platform's rule, equal to Feast's join.

The server hands over the client's Flight command and its labels; the answer is the
joined table or, where the engine does not apply, why not (the server then runs Feast's
join). Rows come as the `training-set` command reads them with the server's settings: the
offline mirror where `OFFLINE_MIRROR_DIR` is set (the chart's default: a mirror of the
server's own, kept incremental beside the training job's; `warm_mirror` copies the
tables before the server listens, `keep_mirror_current` refreshes them between
requests), else COPY scoped to the labels' entities (measured in docs/training-sets.md).

Nothing is screened against the views' expectations here: the answer equals Feast's
join, which screens nothing either.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
from feast import FeatureStore

from feature_platform.config.guard import ConfigError, flag, one_line_error
from feature_platform.console import Say
from feature_platform.errors import PlatformError
from feature_platform.offline import mirror as offline_mirror
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig
from feature_platform.training import engine
from feature_platform.training.labels import TIMESTAMP, LabelError

# Labels staged and read out this many at a time; the answer is one table all the same.
CHUNK_ROWS = 200_000
# Seconds between the server's own refreshes of its mirror while it runs (0: none).
REFRESH_VAR = "OFFLINE_MIRROR_REFRESH_SECONDS"
DEFAULT_REFRESH_S = 300.0
# "true": the mirror lives on the pod's own disk and its places in the change log are given
# up when the server stops (release_mirror)
RELEASE_VAR = "OFFLINE_MIRROR_RELEASE_AT_EXIT"
# How long a stopping server waits for a refresh under way: within the chart's 30 s grace
# period, with time left to give the places up (a refresh cut short keeps its place, which
# then expires).
RELEASE_WAIT_S = 15.0


def _quiet(_line: str) -> None:
    """The engine's progress lines; the server logs one line per request instead."""


def fast_plan(
    store: FeatureStore, command: Mapping[str, Any], labels: pa.Table
) -> engine.Plan | str:
    """The engine's plan for the client's command, or why it does not apply."""
    if command.get("entity_df_sql") is not None or labels.column_names == ["key"]:
        return "labels given as SQL or a time range, not rows"
    if labels.num_rows == 0:
        return "no labels"
    if command.get("full_feature_names"):
        return "full_feature_names"
    if any(command.get("name_aliases") or []):
        return "a feature service renames a view (name alias)"
    if TIMESTAMP not in labels.column_names:
        return f"the labels' time column is not {TIMESTAMP}"
    try:
        plan = engine.plan(store, list(command["feature_refs"]))
    except LabelError as exc:
        return str(exc)
    return engine.unsupported(store, plan) or plan


def training_set(
    store: FeatureStore, plan: engine.Plan, labels: pa.Table, settings: Mapping[str, str]
) -> pa.Table:
    """The labels with their features, in label order, as Feast's join of the configured
    store returns them (the Postgres store's times naive UTC)."""
    labels = _without_pandas_index(labels)
    with tempfile.TemporaryDirectory(prefix="offline-server-") as tmp:
        stage = engine.Stage(Path(tmp))
        try:
            stage.add_labels(iter(labels.to_batches(max_chunksize=CHUNK_ROWS)), plan, _quiet)
            files = engine.view_files(store, plan, settings, _quiet)
            for i, view in enumerate(plan.views):
                stage.add_view(i, view, files[i], _quiet, store)
            chunks = list(stage.chunks(plan, CHUNK_ROWS))
        finally:
            stage.close()
    table = pa.concat_tables(chunks)
    if isinstance(store.config.offline_store, PostgreSQLOfflineStoreConfig):
        table = _naive_utc(table)
    return table


def _without_pandas_index(labels: pa.Table) -> pa.Table:
    """Feast's client sends the labels frame with its index as a column when it is not a
    plain range; Feast's join drops it, and so does this one."""
    metadata = labels.schema.pandas_metadata or {}
    index = [c for c in metadata.get("index_columns", []) if isinstance(c, str)]
    return labels.drop_columns([c for c in index if c in labels.column_names])


def _naive_utc(table: pa.Table) -> pa.Table:
    for i, field in enumerate(table.schema):
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            utc = table.column(i).cast(pa.timestamp(field.type.unit, tz="UTC"))
            table = table.set_column(i, field.name, utc.cast(pa.timestamp(field.type.unit)))
    return table


def warm_mirror(store: FeatureStore, settings: Mapping[str, str], say: Say) -> None:
    """The mirror of every view's Postgres table brought up to date (copied whole the
    first time), so the first request only reads what changed since; a failure is said,
    not raised: that request then refreshes the tables it reads itself."""
    root = settings.get(offline_mirror.DIR_VAR)
    if root and _mirrors_postgres(store):
        say(f"offline server: bringing the mirror under {root} up to date")
        _refresh_mirror(store, settings, say, progress=say)


class Refreshing:
    """The thread `keep_mirror_current` started."""

    def __init__(self, run: Callable[[threading.Event], None]) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=run, args=(self._stop,), name="mirror-refresh", daemon=True
        )
        self._thread.start()

    def stop(self, timeout_s: float | None = None) -> None:
        """No more refreshes; a refresh under way is waited for (up to `timeout_s`)."""
        self._stop.set()
        self._thread.join(timeout_s)


def keep_mirror_current(
    store: FeatureStore, settings: Mapping[str, str], say: Say
) -> Refreshing | None:
    """Between requests, every `REFRESH_VAR` seconds, the mirror brought up to date as at
    start, in a thread of its own: a table an update, a delete or an erasure (`forget`)
    marked is copied whole without waiting for a request that reads it, and the refresh
    after drops the previous copy's files, so a forgotten entity's rows leave the pod's
    disk within two intervals. One line per refresh that copied anything."""
    flag(settings, RELEASE_VAR)  # read at exit, checked at start
    interval = refresh_seconds(settings)
    if not interval or not settings.get(offline_mirror.DIR_VAR) or not _mirrors_postgres(store):
        return None

    def run(stop: threading.Event) -> None:
        while not stop.wait(interval):
            try:
                done = _refresh_mirror(store, settings, say, progress=_quiet)
            except Exception as exc:  # the registry unreadable, say: the next interval tries
                say(f"offline server: mirror not refreshed: {one_line_error(exc, settings)}")
                continue
            changed = [m for m in done.values() if m.full or m.copied_rows]
            if changed:
                say("offline server: mirror refreshed: " + ", ".join(
                    f"{m.table} " + (f"copied whole ({m.why})" if m.full else "brought up to date")
                    + f", {m.copied_rows:,} rows" for m in changed
                ))  # fmt: skip

    return Refreshing(run)


def release_mirror(
    store: FeatureStore,
    settings: Mapping[str, str],
    say: Say,
    refreshing: Refreshing | None,
) -> None:
    """When the server stops: its refreshes ended and, where `RELEASE_VAR` says the mirror
    lives on the pod's own disk (the chart's emptyDir), the mirror's places in the change
    log given up, so a pod that is gone does not hold the log back for
    OFFLINE_MIRROR_KEEP_DAYS. A failure is said: the places then expire."""
    if refreshing is not None:
        refreshing.stop(RELEASE_WAIT_S)
    root = settings.get(offline_mirror.DIR_VAR)
    if not flag(settings, RELEASE_VAR) or not root or not _mirrors_postgres(store):
        return
    try:
        released = offline_mirror.release(
            offline_mirror.connector(store.config.offline_store), Path(root)
        )
    except (psycopg.Error, OSError) as exc:
        say(
            f"offline server: the mirror's places in the change log not given up: "
            f"{one_line_error(exc, settings)}; they expire after {offline_mirror.KEEP_VAR}"
        )
        return
    say(f"offline server: gave up the mirror's place in the change log of {len(released)} tables")


def refresh_seconds(settings: Mapping[str, str]) -> float:
    """`REFRESH_VAR`: seconds between the server's own refreshes of its mirror; 0: none."""
    raw = settings.get(REFRESH_VAR) or str(DEFAULT_REFRESH_S)
    try:
        seconds = float(raw)
    except ValueError:
        raise ConfigError(f"{REFRESH_VAR} must be a number of seconds, got {raw!r}") from None
    if seconds < 0:
        raise ConfigError(f"{REFRESH_VAR} must be 0 or more, got {raw!r}")
    return seconds


def _mirrors_postgres(store: FeatureStore) -> bool:
    return isinstance(store.config.offline_store, PostgreSQLOfflineStoreConfig)


def _refresh_mirror(
    store: FeatureStore, settings: Mapping[str, str], say: Say, progress: Say
) -> dict[str, offline_mirror.Mirrored]:
    """Every view's table refreshed, with a line per table to `progress`; a failure said
    in one line (the next try is the next request's, or the next interval's)."""
    try:
        sources = [view.batch_source for view in store.list_feature_views()]
        keep = offline_mirror.keep(settings)
        root = Path(settings[offline_mirror.DIR_VAR])
        config = store.config.offline_store
        return offline_mirror.refresh_sources(config, sources, root, progress, keep)
    except (psycopg.Error, PlatformError, OSError) as exc:
        say(
            f"offline server: mirror not brought up to date: {one_line_error(exc, settings)}; "
            "the next request refreshes the tables it reads"
        )
        return {}


def fast_join(
    settings: Mapping[str, str],
) -> Callable[[FeatureStore, dict[str, Any], pa.Table], pa.Table | str]:
    """The offline server's `fast_join`: the training set, or why the engine does not apply."""

    def join(store: FeatureStore, command: dict[str, Any], labels: pa.Table) -> pa.Table | str:
        plan = fast_plan(store, command, labels)
        if isinstance(plan, str):
            return plan
        return training_set(store, plan, labels, settings)

    return join
