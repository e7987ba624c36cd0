"""Feast's duckdb offline store (the embedded default reads parquet with it) under the
platform's training rule (`training_rule`): no training row holds a value created after
its label time, and a NULL creation time counts as the event time. Its offline writes (a
push with `to: offline` or `online_and_offline`) replace a parquet file whole, one writer
at a time (`offline_write_batch`).

Select it in feature_store.local.yaml with
`type: feature_platform.stores.duckdb_offline.DuckDBOfflineStore`; every other setting
is Feast's.
"""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import ibis
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.feature_logging import LoggingConfig, LoggingSource
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    IbisRetrievalJob,
    deduplicate,
    get_historical_features_ibis,
    pull_latest_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from ibis.expr.types import Table
from pydantic import StrictBool

from feature_platform.feast_seam.stores import duckdb_read_data_source, duckdb_write_data_source
from feature_platform.stores import served_vectors
from feature_platform.stores.load_window import LoadWindow, SourceColumns
from feature_platform.stores.training_rule import filter_by_created

TYPE = "feature_platform.stores.duckdb_offline.DuckDBOfflineStore"


class DuckDBOfflineStoreConfig(feast_duckdb.DuckDBOfflineStoreConfig):
    type: Literal["feature_platform.stores.duckdb_offline.DuckDBOfflineStore"] = TYPE  # type: ignore[assignment]
    # true: Feast's rule, values created after the label time included
    include_values_created_after_label: StrictBool = False


def _read_created_or_event(source: DataSource, repo_path: str) -> Table:
    """Feast's reader, with NULL creation times read as the event time: the rule's
    `created <= label` would otherwise drop such rows."""
    table = duckdb_read_data_source(source, repo_path)
    created = source.created_timestamp_column
    if created and created in table.columns:
        table = table.mutate(
            **{created: ibis.coalesce(table[created], table[source.timestamp_field])}
        )
    return table


def _local_parquet_file(config: RepoConfig, source: DataSource | None) -> Path | None:
    """The local parquet file behind `source`; None for anything else, which Feast writes."""
    if not isinstance(source, FileSource):
        return None
    if source.file_format is not None and not isinstance(source.file_format, ParquetFormat):
        return None
    uri = FileSource.get_uri_for_file_path(repo_path=config.repo_path, uri=source.file_options.uri)
    path = Path(uri)
    return path if "://" not in uri and not path.is_dir() else None


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """One writer of a file at a time, across threads and worker processes."""
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the handle releases the lock


class DuckDBOfflineStore(feast_duckdb.DuckDBOfflineStore):
    @staticmethod
    def write_logged_features(
        config: RepoConfig,
        data: pa.Table | Path,
        source: LoggingSource,
        logging_config: LoggingConfig,
        registry: BaseRegistry,
    ) -> None:
        """Parquet files under the destination's directory (`served_vectors`; Feast's
        own writer fails on a directory that does not exist yet); a `postgresql:<table>`
        destination is refused by name."""
        destination = served_vectors.file_destination(logging_config)
        if served_vectors.Destination.named_by(destination.path):
            raise ValueError(
                f"served vectors to {destination.path} need the PostgreSQL offline store"
            )
        served_vectors.write_files(destination, served_vectors.as_table(data))

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        store = config.offline_store
        return get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            data_source_reader=_read_created_or_event,
            data_source_writer=duckdb_write_data_source,
            staging_location=store.staging_location,
            staging_location_endpoint_override=store.staging_location_endpoint_override,
            filter_by_created_timestamp=filter_by_created(store, filter_by_created_timestamp),
        )

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        store = config.offline_store
        return pull_latest_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            data_source_reader=_read_created_or_event,
            data_source_writer=duckdb_write_data_source,
            staging_location=store.staging_location,
            staging_location_endpoint_override=store.staging_location_endpoint_override,
        )

    @staticmethod
    def pull_latest_created_since(
        config: RepoConfig,
        data_source: DataSource,
        columns: SourceColumns,
        window: LoadWindow,
        sample: int | None = None,
    ) -> RetrievalJob:
        """The rows PostgreSQLOfflineStore.pull_latest_created_since returns, from parquet."""
        store = config.offline_store
        table = _read_created_or_event(data_source, str(config.repo_path))
        table = table.select(
            *columns.join_keys, *columns.features, columns.timestamp, columns.created
        )
        event = table[columns.timestamp].cast("timestamp")
        created = table[columns.created].cast("timestamp")

        def naive_utc(ts: datetime) -> Any:
            # Feast's ibis queries compare naive UTC times, as here.
            return ibis.literal(ts.astimezone(UTC).replace(tzinfo=None))

        end = naive_utc(window.end)
        table = table.filter(
            event <= end,
            created <= end,
            (created >= naive_utc(window.created_since)) | (event >= naive_utc(window.event_since)),
        )
        table = deduplicate(table, columns.join_keys, columns.timestamp, columns.created)
        if sample is not None:
            table = table.order_by(ibis.random()).limit(sample)
        return IbisRetrievalJob(
            table=table,
            on_demand_feature_views=[],
            full_feature_names=False,
            metadata=None,
            data_source_writer=duckdb_write_data_source,
            staging_location=store.staging_location,
            staging_location_endpoint_override=store.staging_location_endpoint_override,
            repo_path=str(config.repo_path),
        )

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pa.Table,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Append the rows to the view's parquet file: all or none, one writer at a time.

        Feast's store rewrites the file in place: a failure midway leaves a partial file,
        a reader meanwhile can see one, and two writers at once lose one's rows. Here the
        new file is written beside the old one and renamed over it, under a lock."""
        path = _local_parquet_file(config, feature_view.batch_source)
        if path is None:
            feast_duckdb.DuckDBOfflineStore.offline_write_batch(
                config, feature_view, table, progress
            )
            return
        with _exclusive(path.with_name(f"{path.name}.lock")):
            existing = pq.read_table(path)
            if set(table.column_names) != set(existing.column_names):
                raise ValueError(
                    f"{feature_view.name}: the rows have columns {table.column_names}, "
                    f"{path.name} has {existing.column_names}"
                )
            rows = table.select(existing.column_names).cast(existing.schema)
            staged = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
            try:
                pq.write_table(pa.concat_tables([existing, rows]), staged)
                os.replace(staged, path)
            finally:
                staged.unlink(missing_ok=True)
        if progress:
            progress(table.num_rows)
