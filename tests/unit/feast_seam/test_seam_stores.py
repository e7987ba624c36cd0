"""stores.*: the pieces of Feast's stores the platform's stores reuse."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from seam_helpers import assert_params


@pytest.mark.seam("stores.redis_connection_string")
def test_a_connection_string_is_nodes_and_client_arguments(stores: ModuleType) -> None:
    assert_params(stores.parse_redis_connection_string, "connection_string")
    nodes, kwargs = stores.parse_redis_connection_string(
        "redis-a:6379,redis-b:6380,db=1,password=secret,ssl=true,socket_timeout=0.5"
    )
    assert nodes == [{"host": "redis-a", "port": "6379"}, {"host": "redis-b", "port": "6380"}]
    assert kwargs == {"db": 1, "password": "secret", "ssl": True, "socket_timeout": 0.5}


@pytest.mark.seam("stores.sqlite_tables")
def test_a_view_table_is_project_underscore_view_quoted_for_sql(
    stores: ModuleType, objects: dict[str, Any]
) -> None:
    assert_params(stores.sqlite_table_id, "project, table, enable_versioning")
    assert_params(stores.sqlite_quote_id, "identifier")
    assert stores.sqlite_table_id("seam", objects["counts"], False) == "seam_counts"
    assert stores.sqlite_quote_id('seam_"counts"') == '"seam_""counts"""'


@pytest.mark.seam("stores.duckdb_data_source_io")
def test_duckdb_writes_and_reads_a_file_source(stores: ModuleType, tmp_path: Path) -> None:
    import ibis
    from feast import FileSource

    assert_params(stores.duckdb_read_data_source, "data_source, repo_path")
    # as Feast's ibis functions call the writer: (table, source, repo_path[, mode, overwrite])
    assert_params(stores.duckdb_write_data_source, "table, data_source, repo_path, mode")
    rows = pa.table({"customer_id": [1, 2], "n": [7, 8]})
    source = FileSource(path=str(tmp_path / "rows.parquet"), timestamp_field="event_timestamp")
    stores.duckdb_write_data_source(ibis.memtable(rows), source, str(tmp_path), "overwrite")
    read = stores.duckdb_read_data_source(source, str(tmp_path)).to_pyarrow()
    assert read.select(["customer_id", "n"]).to_pylist() == rows.to_pylist()


@pytest.mark.seam("stores.postgres_connection")
def test_the_postgres_connection_is_a_conninfo_and_options(stores: ModuleType) -> None:
    from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig

    assert_params(stores.postgres_conninfo, "config")
    assert_params(stores.postgres_conn_kwargs, "config")
    config = PostgreSQLConfig(
        host="db.internal", port=5433, database="offline", user="u", password="p w",
        db_schema="feast",
    )  # fmt: skip
    assert stores.postgres_conninfo(config) == (
        "user=u password='p w' host=db.internal port=5433 dbname=offline"
    )
    kwargs = stores.postgres_conn_kwargs(config)
    # postgres_offline appends its timeouts to `options`
    assert kwargs["options"] == "-c search_path=feast,public"
    assert kwargs["sslmode"] == "require"


@pytest.mark.seam("stores.postgres_source_table")
def test_a_source_table_is_the_table_given(stores: ModuleType) -> None:
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
        PostgreSQLSource,
    )

    table = PostgreSQLSource(name="t", table="public.counts", timestamp_field="ts")
    query = PostgreSQLSource(name="q", query="SELECT 1", timestamp_field="ts")
    assert stores.postgres_table(table) == "public.counts"
    assert stores.postgres_table(query) == ""


@pytest.mark.seam("stores.logged_feature_service")
def test_a_log_source_names_its_feature_service(
    stores: ModuleType, objects: dict[str, Any]
) -> None:
    from feast import FeatureService
    from feast.feature_logging import FeatureServiceLoggingSource

    service = FeatureService(name="scored", features=[objects["counts"]])
    source = FeatureServiceLoggingSource(service, "seam")
    assert stores.logged_feature_service(source) == "scored"
