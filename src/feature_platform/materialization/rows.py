"""A view's rows between the offline and the online store: read per entity the newest in a
window (`stores/load_window.py`), written through the online store's compare-and-set
write, in process or from Ray's workers (`ray_writes`); and the store a job opens."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

import numpy as np
import psycopg
import pyarrow as pa
from feast import FeatureStore, FeatureView, FileSource
from feast.feature_view import DUMMY_ENTITY_NAME
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from psycopg import sql

from feature_platform.config import feast_commands
from feature_platform.config.guard import ConfigError
from feature_platform.console import Say
from feature_platform.feast_seam import conversion, feature_store
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.feast_seam.stores import (
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.materialization import ray_writes as materialize_ray
from feature_platform.offline import postgres_copy
from feature_platform.quality import database as quality_db
from feature_platform.quality import expectations, quarantine
from feature_platform.quality.screen import screen
from feature_platform.stores.load_window import LoadWindow, SourceColumns
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig
from feature_platform.stores.redis_online import TYPE as REDIS_STORE
from feature_platform.stores.redis_online import RedisOnlineStore

# Rows converted and written at a time unless feature_store.yaml sets
# `materialization: online_write_batch_size`.
DEFAULT_WRITE_BATCH_ROWS = 10_000
RowsT = TypeVar("RowsT", pa.Table, pa.RecordBatch)
# Feast's first window for a view without a ttl.
NO_TTL_LOOKBACK = timedelta(weeks=52)


def by_creation_time(view: Any) -> TypeGuard[FeatureView]:
    """Whether a run reads this view's rows itself, by creation time."""
    source = getattr(view, "batch_source", None)
    return (
        type(view) is FeatureView
        and source is not None
        and bool(source.created_timestamp_column)
        and DUMMY_ENTITY_NAME not in view.entities
        and not view.source_views
        and view.mode is None
    )


def lookback(view: FeatureView) -> timedelta:
    """How far back a view's values count: its ttl, or Feast's first window without one."""
    return view.ttl if view.ttl and view.ttl > timedelta(0) else NO_TTL_LOOKBACK


def _pull(
    store: FeatureStore, view: FeatureView, rows: LoadWindow, sample: int | None = None
) -> RetrievalJob:
    offline = feature_store.provider(store).offline_store
    if not hasattr(offline, "pull_latest_created_since"):
        raise ConfigError(
            f"offline store {store.config.offline_store.type} cannot read rows by creation "
            "time: use the platform's (feature_platform.stores.postgres_offline or "
            "feature_platform.stores.duckdb_offline)"
        )
    entities = [store.registry.get_entity(name, store.project) for name in view.entities]
    # Feast's own mapping of the view's names back to its source's columns.
    join_keys, features, timestamp, created = conversion.column_names(view, entities)
    assert view.batch_source is not None and created
    columns = SourceColumns(join_keys, features, timestamp, created)
    job: RetrievalJob = offline.pull_latest_created_since(
        store.config, view.batch_source, columns, rows, sample
    )
    return job


def _named_as_the_view(view: FeatureView, rows: RowsT) -> RowsT:
    assert view.batch_source is not None
    mapping = view.batch_source.field_mapping
    if not mapping:
        return rows
    return rows.rename_columns([mapping.get(c, c) for c in rows.column_names])


def read(
    store: FeatureStore, view: FeatureView, rows: LoadWindow, sample: int | None = None
) -> pa.Table:
    """The window's rows of `view` (per entity the newest), named as the view names them;
    with `sample`, that many of them drawn at random."""
    return _named_as_the_view(view, _pull(store, view, rows, sample).to_arrow())


def read_batches(
    store: FeatureStore, view: FeatureView, rows: LoadWindow
) -> Iterator[pa.RecordBatch]:
    """The rows `read` returns, in batches, without holding them all: from a Postgres
    offline store through COPY into a spooled file read block by block
    (`offline.postgres_copy`); from the others (parquet files) as read whole."""
    job = _pull(store, view, rows)
    config = store.config.offline_store
    if not isinstance(config, PostgreSQLOfflineStoreConfig):
        for batch in job.to_arrow().to_batches():
            yield _named_as_the_view(view, batch)
        return
    with (
        tempfile.TemporaryDirectory(prefix="feature-platform-rows-") as spool,
        psycopg.connect(postgres_conninfo(config), **postgres_conn_kwargs(config)) as conn,
    ):
        _, batches = postgres_copy.stream(conn, sql.SQL(job.to_sql()), Path(spool))
        for batch in batches:
            yield _named_as_the_view(view, batch)


def write(
    store: FeatureStore,
    view: FeatureView,
    table: pa.Table,
    say: Say,
    set_aside: list[int] | None = None,
) -> int:
    """Write `table` (from `read`) online through the compare-and-set write: a row
    older than the stored one changes nothing. The number of rows. Screened whole (one
    batch): a view that refuses writes nothing; the number quarantined is appended to
    `set_aside`."""
    whole = table.combine_chunks().to_batches()
    return write_batches(store, view, whole, say, total=table.num_rows, set_aside=set_aside)


def screened(
    store: FeatureStore,
    view: FeatureView,
    batches: Iterable[pa.RecordBatch],
    say: Say,
    set_aside: list[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The batches without the rows breaking `view`'s expectations (`quality/`), each
    batch judged on its own: under `quarantine` those rows go to the quarantine table
    (source `materialization`) and leave the offline table, and how many is appended to
    `set_aside`; under `refuse` the first batch breaking a rule raises `Refused` before
    it is written."""
    expected = expectations.of_view(view.name, view.tags)
    if expected is None:
        yield from batches
        return
    target = quality_db.for_store(store.config)
    origin = _origin(store, view) if expected.policy == expectations.QUARANTINE else None
    at = datetime.now(UTC)
    for batch in batches:
        rows = batch.to_pandas()
        aside = screen([expected], rows, target, "materialization", at, view.join_keys, origin)
        if aside:
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[aside] = False
            batch = batch.filter(pa.array(keep))
            say(f"  {view.name}: {len(aside):,} rows quarantined")
            if set_aside is not None:
                set_aside.append(len(aside))
        yield batch


def _origin(store: FeatureStore, view: FeatureView) -> quarantine.Origin:
    """Where `view`'s rows are read from, for a quarantined row to leave it."""
    source = view.batch_source
    entities = [store.registry.get_entity(name, store.project) for name in view.entities]
    join_keys, _, timestamp, created = conversion.column_names(view, entities)
    columns = [*join_keys, timestamp, created]
    mapping = source.field_mapping if source is not None else {}
    named = {column: mapping.get(column, column) for column in columns}
    if isinstance(source, PostgreSQLSource):
        table = postgres_table(source)
        if not table:
            raise ConfigError(
                f"{view.name}: its source is a query; a quarantined row cannot leave it "
                "(use policy refuse, or a table source)"
            )
        return quarantine.Origin(columns, named, table=table)
    if isinstance(source, FileSource):
        return quarantine.Origin(columns, named, parquet=Path(source.path))
    raise ConfigError(f"{view.name}: quarantine needs a Postgres table or parquet file source")


def write_batches(
    store: FeatureStore,
    view: FeatureView,
    batches: Iterable[pa.RecordBatch],
    say: Say,
    total: int | None = None,
    set_aside: list[int] | None = None,
) -> int:
    """`write` of rows that come in batches (`read_batches`), `total` of them if known,
    screened against the view's expectations (`screened`)."""
    batches = screened(store, view, batches, say, set_aside)
    provider = feature_store.provider(store)
    key_types = {column.name: column.dtype.to_value_type() for column in view.entity_columns}
    batch_rows = (
        store.config.materialization_config.online_write_batch_size or DEFAULT_WRITE_BATCH_ROWS
    )
    online = provider.online_store
    # The columns Feast's conversion reads the times from.
    source = view.batch_source
    assert source is not None
    if materialize_ray.enabled(store.config):
        if not isinstance(online, RedisOnlineStore):
            raise ConfigError(f"batch_engine ray.engine needs the online store {REDIS_STORE}")
        collected = list(batches)
        if not collected:
            return 0
        table = pa.Table.from_batches(collected)
        say(f"  {view.name}: {table.num_rows:,} rows to write from Ray workers")
        materialize_ray.write(store.config, view, table, key_types, source.timestamp_field,
                              source.created_timestamp_column, batch_rows)  # fmt: skip
        return int(table.num_rows)
    written = 0
    of_total = f"/{total:,}" if total is not None else ""
    for rows in batches:
        for batch in pa.Table.from_batches([rows]).to_batches(max_chunksize=batch_rows):
            if isinstance(online, RedisOnlineStore):
                online.online_write_arrow(store.config, view, batch, key_types,
                    source.timestamp_field, source.created_timestamp_column)  # fmt: skip
            else:
                data = conversion.arrow_to_proto(batch, view, key_types)
                provider.online_write_batch(store.config, view, data, progress=None)
            written += batch.num_rows
            if total is None or written < total:
                say(f"  {view.name}: {written:,}{of_total} rows written")
    return written


@contextmanager
def job_store(env: str) -> Iterator[FeatureStore]:
    """`feast_commands.open_store` for one job inside a longer-lived process (a test
    session). Feast's cached registry refreshes itself on a timer and registers an exit
    handler, so it and its database connections live as long as the process: released
    here (`feast_seam.registry.release`)."""
    store = feast_commands.open_store(env)
    try:
        yield store
    finally:
        feast_registry.release(store)
