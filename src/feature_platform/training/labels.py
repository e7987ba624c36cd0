"""Label rows for a training set, read as Arrow batches of a bounded size: a parquet or
CSV file, or a SQL query over the environment's offline store (Postgres, or the local
parquet tables under their file names)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from feature_platform.errors import PlatformError
from feature_platform.offline import postgres_copy
from feature_platform.offline import tables as offline_tables

TIMESTAMP = "event_timestamp"


class LabelError(PlatformError, ValueError):
    """Labels the join cannot use; the message is one line for the user."""


def from_file(path: Path, chunk_rows: int) -> Iterator[pa.RecordBatch]:
    if not path.is_file():
        raise LabelError(f"labels file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            parquet = pq.ParquetFile(path)
        except pa.ArrowException as exc:
            raise LabelError(f"{path}: not a readable parquet file ({exc})") from None
        return _checked(parquet.iter_batches(batch_size=chunk_rows), str(path))
    if suffix == ".csv":
        # Arrow infers each column's type from the first block and holds it after.
        return _checked(_csv_batches(path), str(path))
    raise LabelError(f"{path}: labels must be a .parquet or .csv file")


def _csv_batches(path: Path) -> Iterator[pa.RecordBatch]:
    try:
        yield from pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=8 << 20))
    except pa.ArrowInvalid as exc:
        raise LabelError(f"{path}: {str(exc).splitlines()[0]}") from None


def from_sql(
    settings: Mapping[str, str], query: str, work_dir: Path, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    """The query's rows, run where the offline tables are."""
    if offline_tables.source_kind(settings) == "file":
        return _checked(_duckdb_batches(settings, query, chunk_rows), "--labels-sql")
    return _checked(_postgres_batches(settings, query, work_dir), "--labels-sql")


def _postgres_batches(
    settings: Mapping[str, str], query: str, work_dir: Path
) -> Iterator[pa.RecordBatch]:
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    try:
        with psycopg.connect(conninfo) as conn:
            conn.read_only = True
            _, batches = postgres_copy.stream(conn, sql.SQL(query), work_dir)
    except psycopg.Error as exc:
        detail = exc.diag.message_primary or str(exc).splitlines()[0]
        raise LabelError(f"--labels-sql failed: {detail}") from None
    except postgres_copy.UnsupportedColumn as exc:
        raise LabelError(f"--labels-sql: {exc}") from None
    yield from batches


def _duckdb_batches(
    settings: Mapping[str, str], query: str, chunk_rows: int
) -> Iterator[pa.RecordBatch]:
    con = duckdb.connect()
    offline_dir = offline_tables.parquet_path(settings, "x").parent
    for path in sorted(offline_dir.glob("*.parquet")):
        con.execute(f"CREATE VIEW \"{path.stem}\" AS SELECT * FROM read_parquet('{path}')")
    try:
        reader = con.sql(query).to_arrow_reader(chunk_rows)
    except duckdb.Error as exc:
        raise LabelError(f"--labels-sql failed: {str(exc).splitlines()[0]}") from None
    try:
        yield from reader
    finally:
        con.close()


def _checked(batches: Iterator[pa.RecordBatch], where: str) -> Iterator[pa.RecordBatch]:
    """The batches, with the label time checked on the first one."""
    first = True
    for batch in batches:
        if first:
            if TIMESTAMP not in batch.schema.names:
                raise LabelError(f"{where}: labels need a {TIMESTAMP} column")
            if not pa.types.is_timestamp(batch.schema.field(TIMESTAMP).type):
                raise LabelError(
                    f"{where}: {TIMESTAMP} must hold timestamps, "
                    f"got {batch.schema.field(TIMESTAMP).type}"
                )
            first = False
        yield batch
    if first:
        raise LabelError(f"{where}: no label rows")
