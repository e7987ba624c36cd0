"""The offline tables: parquet files for `local`, Postgres tables for the others.

Where a table lives follows `OFFLINE_SOURCE`, the same setting the feature repository's
data sources read, so the generator writes exactly where Feast will look.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from feature_platform.config import credentials
from feature_platform.config.guard import ConfigError
from feature_platform.console import Say

COPY_CHUNK_ROWS = 100_000

# Which column of each table is looked up by key, for an index.
_KEYS = {
    "customer_stats": "customer_id",
    "merchant_stats": "merchant_id",
    "customer_txn_1h": "customer_id",
    "transactions": "customer_id",
}


def postgres_conninfo(env: Mapping[str, str], database: str) -> str:
    """A libpq connection string; the password is passed, never printed (and read again
    from POSTGRES_PASSWORD_FILE when it came from there)."""
    return psycopg.conninfo.make_conninfo(
        host=env["POSTGRES_HOST"],
        port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"],
        password=credentials.POSTGRES_PASSWORD.current(env.get("POSTGRES_PASSWORD", "")),
        sslmode=env.get("POSTGRES_SSLMODE", "prefer"),
        # the CA that verify-full checks the server against ("": libpq's default)
        sslrootcert=env.get("POSTGRES_SSLROOTCERT") or None,
        dbname=database,
        connect_timeout=5,
    )


def identifier(table: str) -> sql.Identifier:
    """A source's table, schema-qualified or not, as an identifier."""
    return sql.Identifier(*table.split(".", 1))


def source_kind(env: Mapping[str, str]) -> str:
    kind = env.get("OFFLINE_SOURCE", "")
    if kind not in ("file", "postgres"):
        raise ConfigError(f"OFFLINE_SOURCE must be 'file' or 'postgres', got {kind!r}")
    return kind


def parquet_path(env: Mapping[str, str], table: str) -> Path:
    # Must match _table_source in feature_repo/data_sources.py.
    return Path(env["PLATFORM_DATA_DIR"]) / "offline" / f"{table}.parquet"


def _pg_type(series: pd.Series) -> str:
    if isinstance(series.dtype, pd.DatetimeTZDtype):
        return "timestamptz"
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "bigint"
    if pd.api.types.is_float_dtype(series):
        return "double precision"
    return "text"


def _csv_ready(df: pd.DataFrame) -> pa.Table:
    """The frame as Arrow with times as naive UTC microseconds: Arrow formats those
    several times faster than zoned ones, and the COPY session reads them as UTC."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    fields = [
        pa.field(f.name, pa.timestamp("us")) if pa.types.is_timestamp(f.type) else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields))


def _copy_frame(conn: psycopg.Connection, table: str, df: pd.DataFrame, progress: Say) -> None:
    """COPY the rows in CSV formatted by Arrow, a chunk at a time (pandas' own CSV
    writer spent most of a large load formatting timestamps)."""
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in df.columns)
    # FREEZE: the table was created in this transaction, so its rows need no later
    # visibility pass.
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv, FREEZE)").format(
        sql.Identifier(table), columns
    )
    conn.execute("SET LOCAL TimeZone = 'UTC'")
    options = pacsv.WriteOptions(include_header=False, quoting_style="needed")

    def csv_chunk(start: int) -> memoryview:
        buffer = io.BytesIO()
        pacsv.write_csv(_csv_ready(df.iloc[start : start + COPY_CHUNK_ROWS]), buffer, options)
        return buffer.getbuffer()

    # Arrow formats the next chunk (outside the GIL) while Postgres parses this one.
    starts = range(0, len(df), COPY_CHUNK_ROWS)
    with ThreadPoolExecutor(1) as pool, conn.cursor() as cur, cur.copy(statement) as copy:
        pending = pool.submit(csv_chunk, 0) if starts else None
        for i, start in enumerate(starts):
            assert pending is not None
            data = pending.result()
            pending = pool.submit(csv_chunk, starts[i + 1]) if i + 1 < len(starts) else None
            copy.write(data)
            done = min(start + COPY_CHUNK_ROWS, len(df))
            if len(df) > COPY_CHUNK_ROWS:
                progress(f"  {table}: {done:,}/{len(df):,} rows ({done * 100 // len(df)}%)")


def write(
    env: Mapping[str, str],
    tables: Mapping[str, pd.DataFrame],
    progress: Say = lambda _msg: None,
) -> None:
    """Replace each table in the environment's offline store."""
    if source_kind(env) == "file":
        for name, df in tables.items():
            path = parquet_path(env, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            # duckdb cannot cast nanosecond timestamps with a zone: write microseconds.
            pq.write_table(
                pa.Table.from_pandas(df, preserve_index=False), path, coerce_timestamps="us"
            )
            progress(f"  {name}: {len(df):,} rows -> {path}")
        return
    with psycopg.connect(postgres_conninfo(env, env["OFFLINE_DB"])) as conn:
        for name, df in tables.items():
            ident = sql.Identifier(name)
            definition = sql.SQL(", ").join(
                sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL(_pg_type(df[c])))
                for c in df.columns
            )
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(ident, definition))
            _copy_frame(conn, name, df, progress)
            if name in _KEYS:
                conn.execute(
                    sql.SQL("CREATE INDEX ON {} ({}, event_timestamp)").format(
                        ident, sql.Identifier(_KEYS[name])
                    )
                )
            conn.execute(sql.SQL("ANALYZE {}").format(ident))
            conn.commit()
            progress(f"  {name}: {len(df):,} rows -> table {name} in {env['OFFLINE_DB']}")


def read(env: Mapping[str, str], table: str) -> pd.DataFrame:
    """One table back as a data frame, timestamps in UTC."""
    if source_kind(env) == "file":
        return pd.read_parquet(parquet_path(env, table))
    with psycopg.connect(postgres_conninfo(env, env["OFFLINE_DB"])) as conn:
        cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(table)))
        names = [d.name for d in cur.description or []]
        df = pd.DataFrame(cur.fetchall(), columns=names)
    for column in df.columns:
        if column.endswith("timestamp"):
            df[column] = pd.to_datetime(df[column], utc=True)
    return df


def ensure_databases(
    env: Mapping[str, str], progress: Say, names: Sequence[str] = ("REGISTRY_DB", "OFFLINE_DB")
) -> None:
    """Create the databases the settings `names` name if missing (needs CREATEDB): by
    default the registry and offline databases."""
    if source_kind(env) == "file":
        return
    with psycopg.connect(postgres_conninfo(env, "postgres"), autocommit=True) as conn:
        for name in (env[setting] for setting in names):
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if exists.fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                progress(f"created database {name}")
