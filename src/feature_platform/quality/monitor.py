"""`feature-platform quality ENV`: every feature's drift, its recent values (the offline
tables' current window, or the vectors the feature server served in it) against a
reference, in a report. Off the serving path: it reads the offline store and the
served vectors' destination only.

The reference is a training set (the rows the `training-set` command wrote, or the sample
recorded with them: the model's view of the world) or, without one, the baseline window
before the current one.
A feature's thresholds are `drift.DEFAULTS`, overridden by the `drift` entry of its
expectations (`feature_repo/expectations.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast import FeatureStore, FeatureView, FileSource
from feast.feature_logging import LOG_TIMESTAMP_FIELD
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from psycopg import sql

from feature_platform.config.guard import ConfigError
from feature_platform.console import Say
from feature_platform.feast_seam.stores import (
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import drift, expectations
from feature_platform.stores import served_vectors
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    def __str__(self) -> str:
        since, until = (t.isoformat(timespec="seconds") for t in (self.since, self.until))
        return f"{since} to {until}"


@dataclass(frozen=True)
class Reference:
    """A training set's rows (its file, or the sample recorded with it) and what to call
    them."""

    name: str
    rows: pd.DataFrame


@dataclass(frozen=True)
class Compared:
    view: str
    result: drift.FeatureDrift


@dataclass(frozen=True)
class Run:
    reference: str
    current: str
    compared: list[Compared]

    @property
    def drifted(self) -> list[Compared]:
        return [c for c in self.compared if c.result.drifted]


def windows(now: datetime, current: timedelta, baseline: timedelta) -> tuple[Window, Window]:
    """The current window, ending now, and the baseline window just before it."""
    recent = Window(now - current, now)
    return recent, Window(recent.since - baseline, recent.since)


def run(
    store: FeatureStore,
    current: Window,
    baseline: Window,
    training_set: Reference | None,
    say: Say,
    served: str | None = None,
) -> Run:
    """Each monitored feature's drift: its current values (the offline rows of the
    current window, or the vectors served in it) against the training set's column for
    it, or against the baseline window's offline rows."""
    served_rows = read_served(store, served, current, say) if served else None
    compared: list[Compared] = []
    for view in _views(store):
        features = [f.name for f in view.features]
        if served_rows is None:
            now_rows = read_window(store, view, features, current)
        else:
            now_rows = _columns_of(served_rows, view.name, features)
        if training_set is None:
            before = read_window(store, view, features, baseline)
        else:
            before = _columns_of(training_set.rows, view.name, features)
        say(f"  {view.name}: {len(before):,} reference rows, {len(now_rows):,} current rows")
        for feature in features:
            if feature not in before or feature not in now_rows:
                continue
            result = drift.compare(
                feature, before[feature], now_rows[feature], _thresholds(view, feature)
            )
            compared.append(Compared(view.name, result))
    reference = training_set.name if training_set else f"baseline {baseline}"
    now = f"served vectors in {served}" if served else "offline rows"
    return Run(reference, f"{now} {current}", compared)


def _views(store: FeatureStore) -> Iterator[FeatureView]:
    """The views whose rows come from an offline table (the ones drift reads)."""
    for view in sorted(store.list_feature_views(), key=lambda v: v.name):
        if isinstance(view.batch_source, PostgreSQLSource | FileSource):
            yield view


def _thresholds(view: FeatureView, feature: str) -> dict[str, float]:
    expected = expectations.of_view(view.name, view.tags)
    if expected is None:
        return {}
    return dict(expected.features.get(feature, {}).get("drift", {}))


def _columns_of(rows: pd.DataFrame, view: str, features: list[str]) -> pd.DataFrame:
    """The column of each of `view`'s features in a training set or the served vectors,
    named plainly (the served vectors, and a training set built with full feature names,
    call it `view__feature`)."""
    found = {}
    for feature in features:
        for column in (f"{view}__{feature}", feature):
            if column in rows:
                found[feature] = rows[column]
                break
    return pd.DataFrame(found)


def read_served(store: FeatureStore, where: str, window: Window, say: Say) -> pd.DataFrame:
    """The served vectors logged to `where` (a feature service's `logging_config`
    destination: a `postgresql:<table>` of the offline database, or a directory of parquet
    files) at times within `window`. A file the server is still writing cannot be read
    yet: it is left out and counted."""
    if served_vectors.Destination.named_by(where):
        config = _postgres(store, f"served vectors in {where}")
        return served_vectors.Destination(where).read(
            postgres_conninfo(config), postgres_conn_kwargs(config), window.since, window.until
        )
    return read_served_files(Path(where), window, say)


def read_served_files(path: Path, window: Window, say: Say) -> pd.DataFrame:
    """The served vectors in the parquet files under `path` at times within `window`."""
    if not path.exists():
        raise ConfigError(f"no served vectors at {path}")
    files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
    tables, unfinished = [], 0
    for file in files:
        try:
            tables.append(pq.read_table(file))
        except (pa.ArrowInvalid, OSError):
            unfinished += 1
    if unfinished:
        say(f"  served vectors: {unfinished} file(s) still being written, left out")
    if not tables:
        raise ConfigError(f"no served vectors under {path}")
    table = pa.concat_tables(tables, promote_options="default")
    times = table[LOG_TIMESTAMP_FIELD]
    # the bounds in the column's own type (a time without a zone is UTC)
    naive = times.type.tz is None
    since, until = (
        pa.scalar(t.astimezone(UTC).replace(tzinfo=None) if naive else t, type=times.type)
        for t in (window.since, window.until)
    )
    inside = pc.and_(pc.greater_equal(times, since), pc.less(times, until))
    return table.filter(inside).to_pandas()


def prune_served(store: FeatureStore, where: str, before: datetime) -> int | None:
    """Delete the vectors served before `before` from a `postgresql:<table>`
    destination; how many, or None for files (kept: their volume's own retention)."""
    if not served_vectors.Destination.named_by(where):
        return None
    config = _postgres(store, f"served vectors in {where}")
    return served_vectors.Destination(where).prune(
        postgres_conninfo(config), postgres_conn_kwargs(config), before
    )


def _postgres(store: FeatureStore, what: str) -> PostgreSQLOfflineStoreConfig:
    config = store.config.offline_store
    if not isinstance(config, PostgreSQLOfflineStoreConfig):
        raise ConfigError(f"{what}: the environment's offline store is not PostgreSQL")
    return config


def read_window(
    store: FeatureStore, view: FeatureView, features: list[str], window: Window
) -> pd.DataFrame:
    """`view`'s rows with event times in `window`, its features named as the view names
    them."""
    source = view.batch_source
    # field_mapping: the source's column -> the view's name for it
    mapping = source.field_mapping if source is not None else {}
    by_view = {view_name: column for column, view_name in mapping.items()}
    columns = [by_view.get(f, f) for f in features]
    named = dict(zip(columns, features, strict=True))
    if isinstance(source, PostgreSQLSource):
        table = postgres_table(source)
        if not table:
            raise ConfigError(f"{view.name}: drift reads a Postgres table source")
        config = _postgres(store, view.name)
        query = sql.SQL("SELECT {} FROM {} WHERE {} >= %s AND {} < %s").format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            offline_tables.identifier(table),
            sql.Identifier(source.timestamp_field),
            sql.Identifier(source.timestamp_field),
        )
        with psycopg.connect(postgres_conninfo(config), **postgres_conn_kwargs(config)) as conn:
            cursor = conn.execute(query, (window.since, window.until))
            frame = pd.DataFrame(cursor.fetchall(), columns=columns)
        return frame.rename(columns=named)
    assert isinstance(source, FileSource)
    stamp = source.timestamp_field
    table = pq.read_table(source.path, columns=[*columns, stamp]).to_pandas()
    times = pd.to_datetime(table[stamp], utc=True)
    inside = (times >= window.since) & (times < window.until)
    return table.loc[inside, columns].reset_index(drop=True).rename(columns=named)


def summary(run: Run) -> dict[str, Any]:
    """The run as plain data: per feature its test, score, threshold and verdict."""
    return {
        "reference": run.reference,
        "current": run.current,
        "features": [
            {
                "view": c.view,
                "feature": c.result.feature,
                "kind": c.result.kind,
                "reference_rows": c.result.reference_rows,
                "current_rows": c.result.current_rows,
                "scores": c.result.scores_by_test(),
                "drifted": c.result.drifted,
            }
            for c in run.compared
        ],
    }
