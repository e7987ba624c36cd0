"""Served vectors in a table of the offline store's database, where every job of the
cluster can read them (a server pod's files are its own).

A feature service names the table as its logging destination,
`FileLoggingDestination(path="postgresql:<table>")`: Feast has no Postgres logging
destination, and a file destination is one every Feast client loads. One row per served
vector: its feature service, when it was served, its request, and the vector itself (the
request's keys, then per feature its value, event time and status, named as Feast's log
schema names them) as JSON, so services of any shape share one table and a changed
service needs no migration. `prune` keeps the table to a window.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from feast.feature_logging import (
    LOG_DATE_FIELD,
    LOG_TIMESTAMP_FIELD,
    REQUEST_ID_FIELD,
    LoggingConfig,
)
from feast.infra.offline_stores.file_source import FileLoggingDestination
from psycopg import sql

SCHEME = "postgresql:"
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
_SYSTEM = {LOG_TIMESTAMP_FIELD, LOG_DATE_FIELD, REQUEST_ID_FIELD}


class Destination:
    """A served-vector table: `postgresql:<table>` (`<schema>.<table>` allowed)."""

    def __init__(self, path: str) -> None:
        table = path.removeprefix(SCHEME)
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(
                f"served vectors: {path!r} is not postgresql:<table> (letters, digits, "
                "underscores; <schema>.<table> allowed)"
            )
        self.name = table
        self.identifier = sql.Identifier(*table.split("."))

    @staticmethod
    def named_by(path: str) -> bool:
        return path.startswith(SCHEME)

    def _create(self, cursor: psycopg.Cursor[Any]) -> None:
        index = sql.Identifier(f"{self.name.split('.')[-1]}_logged_at")
        cursor.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (feature_service text NOT NULL, "
                "logged_at timestamptz NOT NULL, request_id text NOT NULL, vector jsonb NOT NULL)"
            ).format(self.identifier)
        )
        cursor.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (logged_at)").format(
                index, self.identifier
            )
        )

    def write(
        self, conninfo: str, kwargs: Mapping[str, Any], service: str, table: pa.Table
    ) -> None:
        """Append `table` (rows in Feast's log schema) in one transaction."""
        vectors = [c for c in table.column_names if c not in _SYSTEM]
        logged_at = table[LOG_TIMESTAMP_FIELD].to_pylist()
        request_ids = table[REQUEST_ID_FIELD].to_pylist()
        rows = table.select(vectors).to_pylist()
        copy_rows = sql.SQL(
            "COPY {} (feature_service, logged_at, request_id, vector) FROM STDIN"
        ).format(self.identifier)
        with psycopg.connect(conninfo, **kwargs) as conn, conn.cursor() as cursor:
            self._create(cursor)
            with cursor.copy(copy_rows) as copy:
                for at, request_id, row in zip(logged_at, request_ids, rows, strict=True):
                    vector = orjson.dumps(row, default=_json_default).decode()
                    copy.write_row((service, at, request_id, vector))

    def read(
        self, conninfo: str, kwargs: Mapping[str, Any], since: datetime, until: datetime
    ) -> pd.DataFrame:
        """The vectors served at `since` or later and before `until`, one column per log
        field, with the time each was served as Feast's `__log_timestamp`."""
        query = sql.SQL(
            "SELECT logged_at, vector FROM {} WHERE logged_at >= %s AND logged_at < %s "
            "ORDER BY logged_at"
        ).format(self.identifier)
        with psycopg.connect(conninfo, **kwargs) as conn, conn.cursor() as cursor:
            self._create(cursor)
            found = cursor.execute(query, (since, until)).fetchall()
        frame = pd.DataFrame.from_records([vector for _, vector in found])
        frame[LOG_TIMESTAMP_FIELD] = pd.to_datetime([at for at, _ in found], utc=True)
        return frame

    def forget(
        self,
        conninfo: str,
        kwargs: Mapping[str, Any],
        service: str,
        entity: Mapping[str, Any],
        remove: bool,
    ) -> int:
        """How many of `service`'s vectors were served for `entity` (join key -> value);
        with `remove`, those deleted."""
        match = sql.SQL(" AND ").join(
            [sql.SQL("feature_service = %s")] + [sql.SQL("vector ->> %s = %s") for _ in entity]
        )
        params: list[Any] = [service]
        for key, value in entity.items():
            params += [key, str(value)]
        with psycopg.connect(conninfo, **kwargs) as conn, conn.cursor() as cursor:
            self._create(cursor)
            where = sql.SQL("FROM {} WHERE {}").format(self.identifier, match)
            (held,) = cursor.execute(sql.SQL("SELECT count(*) ") + where, params).fetchone()  # type: ignore[misc]
            if remove and held:
                cursor.execute(sql.SQL("DELETE ") + where, params)
            return int(held)

    def prune(self, conninfo: str, kwargs: Mapping[str, Any], before: datetime) -> int:
        """Delete the vectors served before `before`; how many were deleted."""
        with psycopg.connect(conninfo, **kwargs) as conn, conn.cursor() as cursor:
            self._create(cursor)
            cursor.execute(
                sql.SQL("DELETE FROM {} WHERE logged_at < %s").format(self.identifier), (before,)
            )
            return cursor.rowcount


def file_destination(logging_config: LoggingConfig) -> FileLoggingDestination:
    """A feature service's logging destination: a file destination here (a directory,
    s3://, or `postgresql:<table>`)."""
    destination = logging_config.destination
    if not isinstance(destination, FileLoggingDestination):
        raise ValueError(
            f"served vectors go to a file destination here, not {type(destination).__name__}"
        )
    return destination


def as_table(data: pa.Table | Path) -> pa.Table:
    """What Feast hands a store's `write_logged_features`: a table, or a parquet path."""
    return pq.read_table(data) if isinstance(data, Path) else data


def write_files(destination: FileLoggingDestination, table: pa.Table) -> None:
    """Served vectors as parquet files under the destination's directory (local or
    s3://): one new file per batch, partitioned as the destination says."""
    pq.write_to_dataset(
        table,
        root_path=destination.path,
        partition_cols=destination.partition_by or None,
        basename_template=f"{uuid.uuid4().hex}-{{i}}.parquet",
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not a served value JSON holds")
