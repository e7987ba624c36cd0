"""Feast's private pieces of its online and offline stores that the platform's stores
reuse, so they connect, name tables and read sources exactly as Feast's do. The private
methods their subclasses override are the `hooks` seams (see the package docstring).
"""

from __future__ import annotations

from typing import Any

from feast.feature_logging import LoggingSource
from feast.infra.offline_stores import duckdb as _duckdb
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.infra.online_stores import sqlite as _sqlite
from feast.infra.online_stores.redis import RedisOnlineStore
from feast.infra.utils.postgres import connection_utils as _postgres_connection

from feature_platform.config import credentials
from feature_platform.feast_seam import feast_private

parse_redis_connection_string = feast_private(
    RedisOnlineStore, "_parse_connection_string", "stores.redis_connection_string"
)
sqlite_table_id = feast_private(_sqlite, "_table_id", "stores.sqlite_tables")
sqlite_quote_id = feast_private(_sqlite, "_quote_id", "stores.sqlite_tables")
duckdb_read_data_source = feast_private(
    _duckdb, "_read_data_source", "stores.duckdb_data_source_io"
)
duckdb_write_data_source = feast_private(
    _duckdb, "_write_data_source", "stores.duckdb_data_source_io"
)
_feast_postgres_conninfo = feast_private(
    _postgres_connection, "_get_conninfo", "stores.postgres_connection"
)
postgres_conn_kwargs = feast_private(
    _postgres_connection, "_get_conn_kwargs", "stores.postgres_connection"
)


def postgres_conninfo(config: Any) -> str:
    """Feast's conninfo of a PostgreSQL config, its password read again from
    POSTGRES_PASSWORD_FILE when it came from there (what Feast's own connections use too,
    `patches.install_postgres_password`)."""
    password = config.password
    if credentials.POSTGRES_PASSWORD.follows(password):
        current = credentials.POSTGRES_PASSWORD.current(password)
        config = config.model_copy(update={"password": current})
    return str(_feast_postgres_conninfo(config))


def postgres_table(source: PostgreSQLSource) -> str:
    """The table a PostgreSQLSource names as given (schema-qualified or not); '' for a
    source defined by a query."""
    return source._postgres_options._table


def logged_feature_service(source: LoggingSource) -> str:
    """The name of the feature service whose served vectors a logging source describes."""
    return source._feature_service.name  # type: ignore[attr-defined]
