"""Query results out of Postgres at COPY speed, as Arrow record batches.

Fetching rows through a cursor builds a Python object per value (Feast's Postgres store
does this): about 10 k rows/s. `COPY (query) TO STDOUT` in CSV streams text that Arrow's
C++ reader parses, with types taken from the query's own result description (the same
mapping Feast applies, `pg_type_code_to_arrow`), so values and types are Feast's.
Timestamps travel as epoch microseconds (exact, no time-zone text to parse) and come
back as UTC timestamps. The CSV goes through a file on disk, so memory stays bounded by
Arrow's block size, not by the result.

`Binary` reads a whole table's rows for the mirror with `COPY ... (FORMAT binary)`,
decoded into Arrow by the ADBC PostgreSQL driver (C++): Postgres sends the values as
they are stored, with no text to format or parse, at about three times the CSV route's
rate. It takes only columns whose binary form gives the CSV route's values exactly
once cast to Feast's type (`BINARY_TYPES`); a query with another type keeps the CSV
route. It reads in another transaction's exported snapshot, so several connections read
one consistent table.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from feast.type_map import pg_type_code_to_arrow
from psycopg import sql
from psycopg.conninfo import make_conninfo

from feature_platform.errors import PlatformError

BLOCK_BYTES = 16 << 20


class UnsupportedColumn(PlatformError, ValueError):
    """A column type the CSV route cannot carry exactly (arrays, JSON, ...)."""


class CopyFailed(PlatformError, RuntimeError):
    """The binary read failed (connection lost, query cancelled): the driver's message."""


# Type oids whose binary values, cast to Feast's Arrow type, equal what the CSV route
# parses: bool, int8, int2, int4, text, float4, float8 (Postgres prints floats in their
# shortest exact form), varchar, timestamp, timestamptz. Not bpchar (padding) or
# numeric (the driver's decimal text).
BINARY_TYPES = frozenset({16, 20, 21, 23, 25, 700, 701, 1043, 1114, 1184})


def _is_time(arrow_type: pa.DataType) -> bool:
    return pa.types.is_timestamp(arrow_type)


def result_schema(conn: psycopg.Connection, query: sql.Composable) -> pa.Schema:
    """The Arrow schema Feast would give the query's columns."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query))
        fields = []
        for column in cur.description or []:
            arrow_type = pg_type_code_to_arrow(column.type_code)
            if not (
                pa.types.is_integer(arrow_type)
                or pa.types.is_floating(arrow_type)
                or pa.types.is_string(arrow_type)
                or pa.types.is_boolean(arrow_type)
                or _is_time(arrow_type)
            ):
                raise UnsupportedColumn(f"column {column.name!r} has type {arrow_type}")
            if _is_time(arrow_type):
                arrow_type = pa.timestamp("us", tz="UTC")
            fields.append(pa.field(column.name, arrow_type))
    return pa.schema(fields)


def _copy_select(query: sql.Composable, schema: pa.Schema) -> sql.Composed:
    columns = []
    for field in schema:
        name = sql.Identifier(field.name)
        if _is_time(field.type):
            columns.append(
                sql.SQL("(extract(epoch FROM q.{}) * 1000000)::int8 AS {}").format(name, name)
            )
        else:
            columns.append(sql.SQL("q.{}").format(name))
    return sql.SQL("COPY (SELECT {} FROM ({}) AS q) TO STDOUT (FORMAT csv)").format(
        sql.SQL(", ").join(columns), query
    )


def stream(
    conn: psycopg.Connection, query: sql.Composable, work_dir: Path
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """The query's schema and its rows as batches (read lazily from a spooled file)."""
    schema = result_schema(conn, query)
    spool = tempfile.NamedTemporaryFile(dir=work_dir, suffix=".csv", delete=False)  # noqa: SIM115
    path = Path(spool.name)
    with spool, conn.cursor() as cur, cur.copy(_copy_select(query, schema)) as copy:
        for block in copy:
            spool.write(block)
    return schema, _read(path, schema)


def _read(path: Path, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    wire = {f.name: pa.int64() if _is_time(f.type) else f.type for f in schema}
    try:
        if path.stat().st_size == 0:
            return
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=schema.names, block_size=BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=wire,
                # Postgres writes NULL as nothing, unquoted, and an empty string as "";
                # nothing else ("NA", "null") is a null.
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["t"],
                false_values=["f"],
            ),
        )
        for batch in reader:
            arrays = [
                column.cast(field.type) if _is_time(field.type) else column
                for column, field in zip(batch.columns, schema, strict=True)
            ]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    finally:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Binary:
    """Reads queries over one table in `snapshot` (exported by the transaction that made
    this), each on a connection of its own, rows in `schema`."""

    conninfo: str = dataclasses.field(repr=False)  # holds the password
    snapshot: str
    schema: pa.Schema

    @classmethod
    def of(cls, conn: psycopg.Connection, query: sql.Composable, snapshot: str) -> Binary | None:
        """For the queries over the table `query` reads whole; None when one of its
        columns must take the CSV route."""
        schema = result_schema(conn, query)
        with conn.cursor() as cur:
            cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(query))
            codes = {column.type_code for column in cur.description or []}
        if not codes <= BINARY_TYPES:
            return None
        conninfo = make_conninfo(
            conn.info.dsn, **({"password": conn.info.password} if conn.info.password else {})
        )
        return cls(conninfo, snapshot, schema)

    def batches(self, query: str) -> Iterator[pa.RecordBatch]:
        """The query's rows (over the table `of` was given), read in the snapshot."""
        # Imported here: only a whole copy reads this way, and the driver loads a library.
        import adbc_driver_postgresql.dbapi as adbc
        from adbc_driver_manager import Error as AdbcError

        try:
            with adbc.connect(self.conninfo, autocommit=True) as reader, reader.cursor() as cur:
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                cur.execute(f"SET TRANSACTION SNAPSHOT '{self.snapshot}'")
                cur.execute(query)
                for batch in cur.fetch_record_batch():
                    arrays = [
                        column if column.type == field.type else column.cast(field.type)
                        for column, field in zip(batch.columns, self.schema, strict=True)
                    ]
                    yield pa.RecordBatch.from_arrays(arrays, schema=self.schema)
                cur.execute("COMMIT")
        except AdbcError as exc:
            raise CopyFailed(f"binary copy failed: {str(exc).splitlines()[0]}") from exc
