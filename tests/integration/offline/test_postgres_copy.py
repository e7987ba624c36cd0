"""The two ways rows come out of Postgres give the same Arrow values: the binary COPY
the mirror's whole copies read (`postgres_copy.Binary`) against the CSV route every
other read takes, column type by column type; a table with a column the binary route
does not take is still copied whole, through the CSV route; a failed binary read is the
platform's error, not the driver's, and names no password."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import module_database
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from feature_platform.errors import PlatformError
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import postgres_copy

DSN = module_database.DSN


# One column of each type the binary route takes, with the values that differ most
# between text and binary forms: NULLs, empty and quoted strings, NaN, float4 values
# without an exact decimal form, extremes, times without a zone and before 1970.
BINARY_TABLE = """
CREATE TABLE every_type (
    b boolean, i8 bigint, i2 smallint, i4 integer, t text, f4 real, f8 double precision,
    v varchar(20), ts timestamp, tz timestamptz);
INSERT INTO every_type VALUES
    (true, 9223372036854775807, 32767, -2147483648, 'a,"b"' || chr(10) || 'c', 0.1, 1e-300,
     'x', '1969-07-20 20:17:40.123456', '2026-01-01 00:00:00.000001+05:30'),
    (false, -1, -32768, 0, '', 'NaN', 'NaN', '', '2026-03-29 01:30:00', '1900-01-01 00:00Z'),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (true, 0, 0, 1, 'NULL', 3.4028235e38, -0.0, 'ü', '2026-01-01', '2026-06-30 12:00+00');
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    yield from module_database.scratch("postgres_copy")


@pytest.fixture
def connect(database: str) -> Callable[[], psycopg.Connection]:
    def connect() -> psycopg.Connection:
        return psycopg.connect(f"{DSN} dbname={database}")

    return connect


def _values(table: pa.Table) -> list[tuple[Any, ...]]:
    # NaN != NaN, and -0.0 == 0.0: compare floats by their representation.
    rows = zip(*(c.to_pylist() for c in table.columns), strict=True)
    return [tuple(repr(v) if isinstance(v, float) else v for v in row) for row in rows]


def test_binary_reads_give_the_csv_routes_types_and_values(
    connect: Callable[[], psycopg.Connection], tmp_path: Path
) -> None:
    query = sql.SQL("SELECT * FROM every_type")
    with connect() as conn:
        conn.autocommit = True
        conn.execute("DROP TABLE IF EXISTS every_type")
        conn.execute(BINARY_TABLE)
        schema, batches = postgres_copy.stream(conn, query, tmp_path)
        by_csv = pa.Table.from_batches(list(batches), schema)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            (snapshot,) = conn.execute("SELECT pg_export_snapshot()").fetchone()  # type: ignore[misc]
            binary = postgres_copy.Binary.of(conn, query, snapshot)
            assert binary is not None
            by_binary = pa.Table.from_batches(list(binary.batches(query.as_string(conn))))
    assert by_binary.schema == by_csv.schema
    assert by_binary.num_rows == 4
    assert _values(by_binary) == _values(by_csv)


def test_a_table_with_other_types_is_copied_whole_through_csv(
    connect: Callable[[], psycopg.Connection], tmp_path: Path
) -> None:
    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS other_types, other_types__mirror_delta CASCADE")
        conn.execute("CREATE TABLE other_types (id bigint, amount numeric(10, 2), code char(3))")
        conn.execute("INSERT INTO other_types VALUES (1, 12.34, 'ab'), (2, NULL, NULL)")
        conn.commit()
        query = sql.SQL("SELECT * FROM other_types")
        assert postgres_copy.Binary.of(conn, query, "unused") is None
    mirrored = offline_mirror.refresh(connect, "other_types", tmp_path, lambda _: None)
    table = pa.concat_tables(pq.read_table(p) for p in mirrored.parts).sort_by("id")
    assert mirrored.full and mirrored.copied_rows == 2
    assert table.to_pylist() == [
        {"id": 1, "amount": 12.34, "code": "ab "},
        {"id": 2, "amount": None, "code": None},
    ]


def test_a_failed_binary_read_is_the_platforms_error(
    connect: Callable[[], psycopg.Connection],
) -> None:
    with connect() as conn:
        binary = postgres_copy.Binary.of(conn, sql.SQL("SELECT 1 AS one"), "00000003-0-1")
        assert binary is not None
        with pytest.raises(PlatformError, match="binary copy failed") as failed:
            list(binary.batches("SELECT 1 AS one"))
    assert isinstance(failed.value, postgres_copy.CopyFailed)


def test_a_binary_reader_shows_no_password() -> None:
    # It carries the connection's password to the connections it opens; a traceback or
    # a log line that prints it must not.
    binary = postgres_copy.Binary("host=127.0.0.1 password=s3cret", "snapshot", pa.schema([]))
    assert "s3cret" not in repr(binary) and "s3cret" not in str(binary)
