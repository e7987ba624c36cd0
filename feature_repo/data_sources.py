"""Data sources, declared once for every environment.

The offline source type follows the environment in one place, `_table_source`: the
environment's `OFFLINE_SOURCE` says whether the snapshot tables live in Postgres (dev,
prod) or in parquet files under `PLATFORM_DATA_DIR` (local).
"""

import os

from feast import Field, FileSource, PushSource, RequestSource
from feast.data_source import DataSource
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from feast.types import Float64


def _table_source(table: str) -> DataSource:
    """The source for one generated table, in the store this environment uses."""
    kind = os.environ.get("OFFLINE_SOURCE", "")
    common = {
        "name": f"{table}_source",
        "timestamp_field": "event_timestamp",
        "created_timestamp_column": "created_timestamp",
    }
    if kind == "postgres":
        return PostgreSQLSource(table=table, **common)
    if kind == "file":
        data_dir = os.environ.get("PLATFORM_DATA_DIR", "")
        if not data_dir:
            raise RuntimeError("OFFLINE_SOURCE=file needs PLATFORM_DATA_DIR")
        return FileSource(path=os.path.join(data_dir, "offline", f"{table}.parquet"), **common)
    raise RuntimeError(f"OFFLINE_SOURCE must be 'file' or 'postgres', got {kind!r}")


customer_stats_source = _table_source("customer_stats")
merchant_stats_source = _table_source("merchant_stats")

# Hourly transaction aggregates: backfilled from the table, kept fresh over HTTP /push.
customer_txn_1h_push = PushSource(
    name="customer_txn_1h_push",
    batch_source=_table_source("customer_txn_1h"),
)

# The transaction being scored: known at request time, never stored.
transaction_request = RequestSource(
    name="transaction",
    schema=[Field(name="amount", dtype=Float64)],
)
