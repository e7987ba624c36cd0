"""Feast's PostgreSQL offline store under the platform's training rule
(`training_rule`): no training row holds a value created after its label time, and a
NULL creation time counts as the event time. It also writes (`offline_write_batch`, which
Feast's store lacks): a push with `to: offline` or `online_and_offline` reaches training;
and it records served vectors (`write_logged_features`, also missing) to a feature
service's file destination, or to a table of its database (`served_vectors`).

Select it in feature_store.yaml with
`type: feature_platform.stores.postgres_offline.PostgreSQLOfflineStore`; every other
setting is Feast's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import psycopg
import pyarrow as pa
from feast import FeatureView
from feast.data_source import DataSource
from feast.feature_logging import LoggingConfig, LoggingSource
from feast.infra.offline_stores.contrib.postgres_offline_store import postgres as feast_postgres
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from psycopg import sql
from pydantic import PositiveInt, StrictBool

from feature_platform.feast_seam import patches
from feature_platform.feast_seam.stores import (
    logged_feature_service,
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.stores import served_vectors
from feature_platform.stores.load_window import LoadWindow, SourceColumns
from feature_platform.stores.training_rule import CREATED_OR_EVENT, filter_by_created

TYPE = "feature_platform.stores.postgres_offline.PostgreSQLOfflineStore"

# Feast imports this module by its `type:` path: Feast's own connections to the offline
# database read the password file again too (feast_seam.patches).
patches.install_postgres_password()


class PostgreSQLOfflineStoreConfig(feast_postgres.PostgreSQLOfflineStoreConfig):
    type: Literal["feature_platform.stores.postgres_offline.PostgreSQLOfflineStore"] = TYPE  # type: ignore[assignment]
    # true: Feast's rule, values created after the label time included
    include_values_created_after_label: StrictBool = False
    # bounds an offline write (a push): connecting, waiting for a lock, the write itself
    write_timeout_seconds: PositiveInt = 5


def _bounded_kwargs(store: PostgreSQLOfflineStoreConfig) -> dict[str, Any]:
    """Feast's connection arguments with every step of a write bounded by
    `write_timeout_seconds`: connecting, waiting for a lock, the statement itself."""
    timeout_s = store.write_timeout_seconds
    kwargs = postgres_conn_kwargs(store)
    kwargs["options"] += f" -c lock_timeout={timeout_s}s -c statement_timeout={timeout_s}s"
    kwargs["connect_timeout"] = timeout_s
    kwargs["keepalives_idle"] = store.keepalives_idle
    return kwargs


def created_or_event(source: DataSource) -> DataSource:
    """The source with NULL creation times read as the event time.

    Feast's join matches rows on their creation time (`USING (..., created_timestamp)`),
    which drops a row whose creation time is NULL, and orders NULL first when picking
    the newest: read through a column that is never NULL instead."""
    if not source.created_timestamp_column or not isinstance(source, PostgreSQLSource):
        return source
    query = (
        f'SELECT *, COALESCE("{source.created_timestamp_column}", "{source.timestamp_field}") '
        f'AS "{CREATED_OR_EVENT}" FROM {source.get_table_query_string()} AS source_rows'
    )
    return PostgreSQLSource(
        name=source.name,
        query=query,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=CREATED_OR_EVENT,
        field_mapping=source.field_mapping,
    )


def _with_source(view: FeatureView) -> FeatureView:
    source = view.batch_source
    if source is None:
        return view
    view = copy.copy(view)
    view.batch_source = created_or_event(source)
    return view


class PostgreSQLOfflineStore(feast_postgres.PostgreSQLOfflineStore):
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
        **kwargs: Any,
    ) -> RetrievalJob:
        return feast_postgres.PostgreSQLOfflineStore.get_historical_features(
            config,
            [_with_source(view) for view in feature_views],
            feature_refs,
            entity_df,
            registry,
            project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created(
                config.offline_store, filter_by_created_timestamp
            ),
            **kwargs,
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
        source = created_or_event(data_source)
        return feast_postgres.PostgreSQLOfflineStore.pull_latest_from_table_or_query(
            config,
            source,
            join_key_columns,
            feature_name_columns,
            timestamp_field,
            source.created_timestamp_column or None,
            start_date,
            end_date,
        )

    @staticmethod
    def pull_latest_created_since(
        config: RepoConfig,
        data_source: DataSource,
        columns: SourceColumns,
        window: LoadWindow,
        sample: int | None = None,
    ) -> RetrievalJob:
        """The newest row per entity among the rows `window` loads (`load_window`), the
        creation column holding the creation time or, where NULL, the event time; with
        `sample`, that many of those rows drawn at random."""
        source = created_or_event(data_source)
        assert isinstance(source, PostgreSQLSource)
        event, created = f'a."{columns.timestamp}"', f'a."{CREATED_OR_EVENT}"'
        selected = [*columns.join_keys, *columns.features, columns.timestamp]
        end, since = f"'{window.end}'::timestamptz", f"'{window.created_since}'::timestamptz"
        query = f"""
            SELECT {", ".join(f'b."{c}"' for c in [*selected, columns.created])}
            FROM (
                SELECT {", ".join(f'a."{c}"' for c in selected)},
                    {created} AS "{columns.created}",
                    ROW_NUMBER() OVER (
                        PARTITION BY {", ".join(f'a."{c}"' for c in columns.join_keys)}
                        ORDER BY {event} DESC, {created} DESC
                    ) AS _feast_row
                FROM {source.get_table_query_string()} a
                WHERE {event} <= {end} AND {created} <= {end}
                    AND ({created} >= {since}
                         OR {event} >= '{window.event_since}'::timestamptz)
            ) b
            WHERE _feast_row = 1
        """
        if sample is not None:
            query += f" ORDER BY random() LIMIT {int(sample)}"
        return feast_postgres.PostgreSQLRetrievalJob(
            query=query, config=config, full_feature_names=False, on_demand_feature_views=None
        )

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pa.Table,
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Append the rows to the view's batch table in one transaction: all or none.

        Columns are matched by name. The connection is Feast's (the offline store's
        settings) with every step bounded by `write_timeout_seconds`: a locked table or
        an unreachable server fails the write instead of holding the caller."""
        source = feature_view.batch_source
        if not isinstance(source, PostgreSQLSource) or not postgres_table(source):
            raise ValueError(f"{feature_view.name}: offline writes need a PostgreSQLSource table")
        if table.num_rows == 0:
            return
        store = config.offline_store
        kwargs = _bounded_kwargs(store)
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            # the table's text as Feast's own queries use it, so writes and reads resolve alike
            sql.SQL(postgres_table(source)),
            sql.SQL(", ").join(sql.Identifier(name) for name in table.column_names),
        )
        columns = [column.to_pylist() for column in table.columns]
        with (
            psycopg.connect(postgres_conninfo(store), **kwargs) as conn,
            conn.cursor() as cursor,
            cursor.copy(statement) as copy,
        ):
            for row in zip(*columns, strict=True):
                copy.write_row(row)
        if progress:
            progress(table.num_rows)

    @staticmethod
    def write_logged_features(
        config: RepoConfig,
        data: pa.Table | Path,
        source: LoggingSource,
        logging_config: LoggingConfig,
        registry: BaseRegistry,
    ) -> None:
        """Served vectors to the destination's `postgresql:<table>` in this store's
        database, or as parquet files under its directory (`served_vectors`)."""
        destination = served_vectors.file_destination(logging_config)
        table = served_vectors.as_table(data)
        if served_vectors.Destination.named_by(destination.path):
            store = config.offline_store
            served_vectors.Destination(destination.path).write(
                postgres_conninfo(store),
                _bounded_kwargs(store),
                logged_feature_service(source),
                table,
            )
            return
        served_vectors.write_files(destination, table)
