"""A parquet mirror of Postgres offline tables, kept exact by the database itself.

Reading millions of rows out of Postgres costs seconds on every training set; the mirror
pays that once, then copies only what changed. Its files serve the fast training engine
and engines that read files only (Ray).

Statement-level triggers the platform installs on each mirrored table record changes in
the same transaction as the change, each with that transaction's id (`xid8`):

- an INSERT (or COPY) copies its new rows from the statement's transition table into
  `<table>__mirror_delta`;
- an UPDATE, DELETE or TRUNCATE adds a mark for the table to
  `feature_platform_mirror_marks`.

Nothing a refresh does takes a change away from another mirror: each mirror directory
keeps its own place in that log, the snapshot (`pg_current_snapshot()`) its last copy or
delta read was taken in, in its manifest. So the training job's mirror, the offline
server's and a developer's each stay exact and incremental over the same tables.

A refresh, under an advisory lock per table (mirrors of one table refresh in turn),
does one of two things:

- a delta copy: in one REPEATABLE READ transaction, the delta rows of transactions the
  previous snapshot did not see (`NOT pg_visible_in_snapshot`, the scan bounded below by
  that snapshot's xmin) go to one part file, and the new manifest records this
  transaction's snapshot. Rows of transactions still open then are read by the next
  refresh; a row is never read twice. A crash before the manifest reads them again.
- a full copy when the delta does not apply: no mirror yet (or one of the layout before
  positions), a mark the previous snapshot did not see, the table replaced or its
  columns changed, the triggers gone, or the mirror's position expired (below). The
  triggers and the delta table are (re)created only when missing or out of date, in a
  transaction that locks out writers for that DDL only (SHARE ROW EXCLUSIVE; readers go
  on); a generation in `feature_platform_mirror_state` makes every mirror of the table
  copy whole once after that. Then, in a REPEATABLE READ snapshot, the table is copied to
  a new directory; writes go on and reach the next refresh through the delta. The rows
  are read in binary (`postgres_copy.Binary`, about three times the CSV route's rate; a
  table with a column type it does not take goes through CSV) on connections of their
  own that read that snapshot (exported by the first). A table larger than `RANGE_PAGES`
  is copied as block ranges, one part each, on up to `COPIES_AT_ONCE` such connections:
  Postgres sends rows on one core per connection.

Each refresh records its mirror's position (its snapshot's xmin and the time) in
`feature_platform_mirror_positions`; delta rows and marks below every position of the
table are deleted. A mirror not refreshed for `OFFLINE_MIRROR_KEEP_DAYS` (default 7)
loses its position and stops holding the log back; when it comes back it finds its
position gone and copies whole, and says so. `release` gives a directory's positions up
at once, for a mirror that will not be refreshed again (a pod's disk, when the offline
server stops). Mirrors written before positions existed
(the delta claimed by one mirror) are copied whole on their first refresh.

`refresh_all` brings several tables up to date at once, each on its own connections;
`refresh_sources` those of Feast sources. The training-set command and the offline
server refresh the tables they read, and the materialization job every table of the
registry's views after each run (when it has the mirror directory), so a training set
rarely finds one to copy whole.

Each table's copy lives in `<root>/<database>/<schema>.<table>/`; its `manifest.json`
(replaced atomically) names the parts of the current copy; the parts of the previous
manifest are kept too, for readers that opened it just before. One root serves one
Postgres server.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import (
    PostgreSQLSource,
)
from psycopg import sql

from feature_platform.console import Say
from feature_platform.errors import PlatformError
from feature_platform.feast_seam.stores import (
    postgres_conn_kwargs,
    postgres_conninfo,
    postgres_table,
)
from feature_platform.offline import postgres_copy

# The mirror's root directory, in an environment's settings; empty: no mirror.
DIR_VAR = "OFFLINE_MIRROR_DIR"
# Days a mirror not refreshed keeps its place in the change log; after that the log is
# pruned past it, and it copies whole when it comes back.
KEEP_VAR = "OFFLINE_MIRROR_KEEP_DAYS"
KEEP = timedelta(days=7)
MANIFEST = "manifest.json"
# More delta parts than this are merged into one, so reads stay one scan per file.
MAX_PARTS = 16
DELTA_SUFFIX = "__mirror_delta"
XID = "__mirror_xid"
TRIGGERS = ("insert", "update", "delete", "truncate")
# A whole copy of a table past this many pages (8 KiB each: 64 MiB) is split in block
# ranges copied at once, on at most COPIES_AT_ONCE connections (tables, likewise).
RANGE_PAGES = 8192
COPIES_AT_ONCE = min(4, os.cpu_count() or 1)

# Why a refresh copies whole, as its progress line says it.
NEW = "no mirror yet"
OLD_LAYOUT = "a mirror of the layout before positions"
EXPIRED = "its position in the change log expired or was never recorded"


# Installed once per database; SECURITY DEFINER so a writer needs no rights on the delta.
# A delta insert that fails (a column dropped since the delta was made) marks the table
# instead: a write to the offline table never fails because of the mirror. The tables of
# the layout before positions (one mark per table, a mirror id per table) are replaced.
_SETUP = """
DO $$ BEGIN
    IF to_regclass('feature_platform_mirror_marks') IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attname = 'xid' AND NOT attisdropped
        AND attrelid = to_regclass('feature_platform_mirror_marks')) THEN
        DROP TABLE feature_platform_mirror_marks;
        DROP TABLE IF EXISTS feature_platform_mirror_state;
    END IF;
END $$;
CREATE TABLE IF NOT EXISTS feature_platform_mirror_marks (
    table_name text NOT NULL, xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
    marked_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX IF NOT EXISTS feature_platform_mirror_marks_table
    ON feature_platform_mirror_marks (table_name, xid);
CREATE TABLE IF NOT EXISTS feature_platform_mirror_state (
    table_name text PRIMARY KEY, table_oid oid NOT NULL, generation bigint NOT NULL);
CREATE TABLE IF NOT EXISTS feature_platform_mirror_positions (
    mirror_id text NOT NULL, table_name text NOT NULL, snapshot_xmin xid8 NOT NULL,
    seen_at timestamptz NOT NULL, PRIMARY KEY (table_name, mirror_id));
CREATE OR REPLACE FUNCTION feature_platform_mirror_mark() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    INSERT INTO public.feature_platform_mirror_marks (table_name)
    VALUES (quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME));
    RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION feature_platform_mirror_insert() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
    BEGIN
        EXECUTE format(
            'INSERT INTO %I.%I SELECT *, pg_current_xact_id() FROM feature_platform_new_rows',
            TG_TABLE_SCHEMA, TG_TABLE_NAME || '__mirror_delta');
    EXCEPTION WHEN OTHERS THEN
        INSERT INTO public.feature_platform_mirror_marks (table_name)
        VALUES (quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME));
    END;
    RETURN NULL;
END $$;
"""


class MirrorError(PlatformError, RuntimeError):
    """The table cannot be mirrored (missing, a view, a name too long)."""


@dataclass(frozen=True)
class Mirrored:
    """One refresh's outcome: the files that hold the table now."""

    table: str
    parts: list[Path]
    full: bool  # copied whole in this refresh
    copied_rows: int  # rows read out of Postgres by this refresh
    seconds: float
    why: str = ""  # why it was copied whole


@dataclass(frozen=True)
class _Table:
    qualified: str  # schema.name, quoted as the triggers record it
    schema: str
    name: str
    oid: int
    columns: list[list[str]]  # [name, type] in column order

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def delta(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name + DELTA_SUFFIX)


def keep(settings: Mapping[str, str]) -> timedelta:
    """How long a mirror not refreshed keeps its place in the change log (`KEEP_VAR`)."""
    text = settings.get(KEEP_VAR, "").strip()
    if not text:
        return KEEP
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not days > 0:
        raise MirrorError(f"{KEEP_VAR} must be a number of days above 0, not {text!r}")
    return timedelta(days=days)


def refresh(
    connect: Callable[[], psycopg.Connection],
    table: str,
    root: Path,
    say: Say,
    keep: timedelta = KEEP,
) -> Mirrored:
    """Bring `root/<table>` up to date with the Postgres table `table` and return its parts."""
    started = time.monotonic()
    with connect() as conn:
        conn.autocommit = True
        with conn.transaction():
            # Refreshes at once (tables in parallel, other jobs) would race on creating
            # the same catalog rows.
            conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_SPACE,))
            conn.execute(_SETUP)
        found = _describe(conn, table)
        (database,) = conn.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
        directory = root / database / f"{found.schema}.{found.name}"
        directory.mkdir(parents=True, exist_ok=True)
        conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_SPACE, found.oid))
        try:
            manifest = _read_manifest(directory)
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            copied, why = _copy_delta(conn, found, directory, manifest)
            full = copied is None
            if copied is None:
                copied = _copy_full(conn, connect, found, directory, manifest, why)
            manifest = _read_manifest(directory)  # the one the copy just wrote
            assert manifest is not None
            _record_position(conn, found, manifest, keep)
            if len(manifest["parts"]) > MAX_PARTS:
                manifest = _compact(directory, manifest)
        finally:
            conn.isolation_level = None
            conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, found.oid))
    seconds = time.monotonic() - started
    how = f"copied whole ({why})" if full else "brought up to date"
    say(f"  mirror {found.name}: {how}, {copied:,} rows from Postgres in {seconds:.1f}s")
    return Mirrored(
        table=found.name,
        parts=[directory / p for p in manifest["parts"]],
        full=full,
        copied_rows=copied,
        seconds=seconds,
        why=why if full else "",
    )


def refresh_all(
    connect: Callable[[], psycopg.Connection],
    tables: Iterable[str],
    root: Path,
    say: Say,
    keep: timedelta = KEEP,
) -> dict[str, Mirrored]:
    """`refresh` for each table (once each), several at a time: table name -> outcome."""
    names = list(dict.fromkeys(tables))
    if not names:
        return {}
    with ThreadPoolExecutor(min(COPIES_AT_ONCE, len(names)), "mirror-refresh") as pool:
        done = pool.map(lambda name: refresh(connect, name, root, say, keep), names)
        return dict(zip(names, done, strict=True))


def refresh_sources(
    config: Any, sources: Iterable[Any], root: Path, say: Say, keep: timedelta = KEEP
) -> dict[str, Mirrored]:
    """`refresh_all` for the tables the PostgreSQLSources among `sources` name (one
    defined by a query has none), over connections made from the offline store's
    `config`: table name, as the source gives it -> outcome."""
    tables = [postgres_table(s) for s in sources if isinstance(s, PostgreSQLSource)]
    return refresh_all(connector(config), [name for name in tables if name], root, say, keep)


def connector(config: Any) -> Callable[[], psycopg.Connection]:
    """New connections to the offline store of `config`."""
    return lambda: psycopg.connect(postgres_conninfo(config), **postgres_conn_kwargs(config))


def release(connect: Callable[[], psycopg.Connection], root: Path) -> list[str]:
    """Give up the places in the change log of every table mirrored under `root` (for the
    database `connect` reaches), for a mirror that will not be refreshed again: a pod's
    disk when the pod stops. The log is no longer held back for it; if the directory is
    refreshed after all, each table finds its position gone and is copied whole. The
    tables whose place was given up."""
    released: list[str] = []
    with connect() as conn:
        conn.autocommit = True
        (database, kept) = conn.execute(  # type: ignore[misc]
            "SELECT current_database(), to_regclass('feature_platform_mirror_positions')"
        ).fetchone()
        if kept is None:
            return released
        for path in sorted((root / database).glob("*/manifest.json")):
            manifest = _read_manifest(path.parent)
            if manifest is None or "mirror_id" not in manifest:
                continue
            deleted = conn.execute(
                "DELETE FROM feature_platform_mirror_positions "
                "WHERE table_name = %s AND mirror_id = %s",
                (manifest["table"], manifest["mirror_id"]),
            ).rowcount
            if deleted:
                released.append(manifest["table"])
    return released


# The advisory lock's first key: the mirror's own space, the table's oid the second
# (0, which no table has: the setup).
_LOCK_SPACE = 0x6D697272


def _describe(conn: psycopg.Connection, table: str) -> _Table:
    row = conn.execute(
        "SELECT c.oid, n.nspname, c.relname, c.relkind FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
        (table,),
    ).fetchone()
    if row is None:
        raise MirrorError(f"no table {table!r} in the offline database")
    oid, schema, name, kind = row
    if kind not in ("r", "p"):
        raise MirrorError(f"{table!r} is not a table (relkind {kind}): only tables are mirrored")
    if len((name + DELTA_SUFFIX).encode()) > 63:
        raise MirrorError(f"table name {name!r} is too long to mirror (the delta table's name)")
    columns = _columns(conn, oid)
    qualified = conn.execute("SELECT quote_ident(%s) || '.' || quote_ident(%s)", (schema, name))
    (text,) = qualified.fetchone()  # type: ignore[misc]
    return _Table(text, schema, name, int(oid), columns)


def _columns(conn: psycopg.Connection, oid: int | None) -> list[list[str]]:
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    ).fetchall()
    return [[c, t] for c, t in columns]


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def _write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    partial = directory / f".{MANIFEST}.{os.getpid()}"
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, directory / MANIFEST)


def _log_generation(conn: psycopg.Connection, table: _Table) -> int | None:
    """The generation of the table's change log when its triggers and delta table are in
    place and match the table's columns; None when they must be (re)created."""
    state = conn.execute(
        "SELECT table_oid, generation FROM feature_platform_mirror_state WHERE table_name = %s",
        (table.qualified,),
    ).fetchone()
    (triggers,) = conn.execute(  # type: ignore[misc]
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s AND tgname = ANY(%s)",
        (table.oid, [_trigger(kind) for kind in TRIGGERS]),
    ).fetchone()
    (delta,) = conn.execute(  # type: ignore[misc]
        "SELECT to_regclass(%s)::oid", (f"{table.qualified}{DELTA_SUFFIX}",)
    ).fetchone()
    if state is None or int(state[0]) != table.oid or triggers != len(TRIGGERS) or not delta:
        return None
    if _columns(conn, delta) != [*table.columns, [XID, "xid8"]]:
        return None
    return int(state[1])


def _delta_applies(conn: psycopg.Connection, table: _Table, manifest: dict[str, Any] | None) -> str:
    """Why the mirror cannot be brought up to date from the change log ('' when it can),
    as the snapshot of the refresh's transaction sees it."""
    if manifest is None:
        return NEW
    if "snapshot" not in manifest:
        return OLD_LAYOUT
    if manifest["columns"] != table.columns:
        return "its columns changed"
    generation = _log_generation(conn, table)
    if generation is None:
        return "its change log (triggers, delta table) is missing or out of date"
    if generation != manifest["generation"]:
        return "its change log was made again since this mirror's copy"
    position = conn.execute(
        "SELECT snapshot_xmin <= pg_snapshot_xmin(%s::pg_snapshot) "
        "FROM feature_platform_mirror_positions "
        "WHERE table_name = %s AND mirror_id = %s",
        (manifest["snapshot"], table.qualified, manifest["mirror_id"]),
    ).fetchone()
    if position is None:
        return EXPIRED
    if not position[0]:
        # Recorded ahead of this manifest: a copy of this directory refreshes elsewhere.
        return "another mirror directory holds its position"
    marked = conn.execute(
        "SELECT 1 FROM feature_platform_mirror_marks WHERE table_name = %s "
        "AND xid >= pg_snapshot_xmin(%s::pg_snapshot) "
        "AND NOT pg_visible_in_snapshot(xid, %s::pg_snapshot) LIMIT 1",
        (table.qualified, manifest["snapshot"], manifest["snapshot"]),
    ).fetchone()
    if marked:
        return "updated, deleted from or truncated"
    return ""


def _trigger(kind: str) -> str:
    return f"feature_platform_mirror_{kind}"


def _copy_full(
    conn: psycopg.Connection,
    connect: Callable[[], psycopg.Connection],
    table: _Table,
    directory: Path,
    manifest: dict[str, Any] | None,
    why: str,
) -> int:
    keeps_id = manifest and why not in (OLD_LAYOUT, "another mirror directory holds its position")
    mirror_id = manifest["mirror_id"] if manifest and keeps_id else uuid.uuid4().hex
    generation = _log_generation(conn, table)
    if generation is None:
        generation = _start_delta(conn, table)
    # A directory no manifest names yet: readers of the current one keep their files.
    used = [int(p.name[4:]) for p in directory.glob("gen-*") if p.name[4:].isdigit()]
    copy = f"gen-{max(used, default=0) + 1}"
    rows, parts, snapshot = _copy_table(conn, connect, table, directory, copy)
    previous = manifest["parts"] if manifest else []
    _write_manifest(
        directory,
        {
            "table": table.qualified,
            "mirror_id": mirror_id,
            "generation": generation,
            "snapshot": snapshot,
            "columns": table.columns,
            "copy": copy,
            "last_delta": 0,
            "parts": parts,
            "previous_parts": previous,
        },
    )
    _remove_unlisted(directory)
    return rows


def _start_delta(conn: psycopg.Connection, table: _Table) -> int:
    """(Re)create the delta table and the triggers; the new generation. Writers are locked
    out for this DDL only: every write that commits after it goes through the triggers,
    every write before it is in the snapshot of the copy that follows."""
    with conn.transaction():
        # Creating triggers locks their functions, which the setup replaces: not at once.
        conn.execute("SELECT pg_advisory_xact_lock_shared(%s, 0)", (_LOCK_SPACE,))
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table.ident))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.delta))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (LIKE {}, {} xid8 NOT NULL DEFAULT pg_current_xact_id())"
            ).format(table.delta, table.ident, sql.Identifier(XID))
        )
        # A delta read scans from the previous snapshot's xmin on, not the whole log.
        conn.execute(sql.SQL("CREATE INDEX ON {} ({})").format(table.delta, sql.Identifier(XID)))
        for kind in TRIGGERS:
            conn.execute(
                sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(_trigger(kind)), table.ident
                )
            )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS "
                "feature_platform_new_rows FOR EACH STATEMENT "
                "EXECUTE FUNCTION feature_platform_mirror_insert()"
            ).format(sql.Identifier(_trigger("insert")), table.ident)
        )
        for kind in ("update", "delete", "truncate"):
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {} AFTER {} ON {} FOR EACH STATEMENT "
                    "EXECUTE FUNCTION feature_platform_mirror_mark()"
                ).format(sql.Identifier(_trigger(kind)), sql.SQL(kind.upper()), table.ident)
            )
        # Marks of the log before are about rows the copy that follows holds.
        conn.execute(
            "DELETE FROM feature_platform_mirror_marks WHERE table_name = %s", (table.qualified,)
        )
        (generation,) = conn.execute(  # type: ignore[misc]
            "INSERT INTO feature_platform_mirror_state AS s VALUES (%s, %s, 1) "
            "ON CONFLICT (table_name) DO UPDATE SET table_oid = excluded.table_oid, "
            "generation = s.generation + 1 RETURNING generation",
            (table.qualified, table.oid),
        ).fetchone()
    return int(generation)


def _copy_table(
    conn: psycopg.Connection,
    connect: Callable[[], psycopg.Connection],
    table: _Table,
    directory: Path,
    generation: str,
) -> tuple[int, list[str], str]:
    """The whole table into parts under `directory/generation`, writers going on: its
    rows, the parts and the snapshot they were read in. Writes that snapshot does not see
    reach the next refresh through the delta."""
    with conn.transaction():
        (snapshot,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone()  # type: ignore[misc]
        (pages,) = conn.execute(  # type: ignore[misc]
            "SELECT pg_relation_size(%s) / current_setting('block_size')::int", (table.oid,)
        ).fetchone()
        ranges = max(1, min(COPIES_AT_ONCE, pages // RANGE_PAGES))
        whole = sql.SQL("SELECT * FROM {}").format(table.ident)
        # Block ranges, the last one open: pages added since are read too, and a row
        # version has one place in the snapshot, so each row lands in one range.
        (exported,) = conn.execute("SELECT pg_export_snapshot()").fetchone()  # type: ignore[misc]
        starts = [pages * i // ranges for i in range(ranges)]
        queries = [
            sql.SQL("{} WHERE ctid >= {}::tid{}").format(
                whole,
                sql.Literal(f"({start},0)"),
                sql.SQL(" AND ctid < {}::tid").format(sql.Literal(f"({end},0)"))
                if end is not None
                else sql.SQL(""),
            )
            for start, end in zip(starts, [*starts[1:], None], strict=True)
        ]
        parts = [f"{generation}/full-{i}.parquet" for i in range(ranges)]
        if ranges == 1:
            parts = [f"{generation}/full.parquet"]
        binary = postgres_copy.Binary.of(conn, whole, exported)
        if binary is not None:
            # Each range on a connection of its own in the exported snapshot, this one
            # holding it open: decoding and parquet writing run without the GIL.
            with ThreadPoolExecutor(ranges, "mirror-range") as pool:
                copied = [
                    pool.submit(
                        _write_parquet,
                        binary.schema,
                        binary.batches(query.as_string(conn)),
                        directory / part,
                        keep_empty=True,
                    )
                    for query, part in zip(queries, parts, strict=True)
                ]
                return sum(c.result() for c in copied), parts, snapshot
        if ranges == 1:
            rows = _copy_to_parquet(conn, whole, directory / parts[0], keep_empty=True)
            return rows, parts, snapshot
        with ThreadPoolExecutor(ranges - 1, "mirror-range") as pool:
            others = [
                pool.submit(_copy_in_snapshot, connect, exported, query, directory / part)
                for query, part in zip(queries[1:], parts[1:], strict=True)
            ]
            rows = _copy_to_parquet(conn, queries[0], directory / parts[0], keep_empty=True)
            return rows + sum(other.result() for other in others), parts, snapshot


def _copy_in_snapshot(
    connect: Callable[[], psycopg.Connection], snapshot: str, query: sql.Composable, path: Path
) -> int:
    """The query's rows into `path`, read in another transaction's exported snapshot."""
    with connect() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        with conn.transaction():
            conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            return _copy_to_parquet(conn, query, path, keep_empty=True)


def _copy_delta(
    conn: psycopg.Connection, table: _Table, directory: Path, manifest: dict[str, Any] | None
) -> tuple[int | None, str]:
    """The rows inserted by transactions the manifest's snapshot did not see, as one more
    part: their count, or None and why the mirror needs a full copy instead."""
    with conn.transaction():
        why = _delta_applies(conn, table, manifest)
        if why:
            return None, why
        assert manifest is not None
        (snapshot,) = conn.execute("SELECT pg_current_snapshot()::text").fetchone()  # type: ignore[misc]
        previous = sql.Literal(manifest["snapshot"])
        xid = sql.Identifier(XID)
        columns = sql.SQL(", ").join(sql.Identifier(name) for name, _ in table.columns)
        query = sql.SQL(
            "SELECT {} FROM {} WHERE {} >= pg_snapshot_xmin({}::pg_snapshot) "
            "AND NOT pg_visible_in_snapshot({}, {}::pg_snapshot)"
        ).format(columns, table.delta, xid, previous, xid, previous)
        number = manifest["last_delta"] + 1
        part = f"{manifest['copy']}/delta-{number}.parquet"
        rows = _copy_to_parquet(conn, query, directory / part, keep_empty=False)
    # The manifest moves to the new snapshot even with no rows: the mirror's position
    # follows it, and the log is pruned up to it. The files only older manifests name (a
    # copy replaced by a whole copy) go.
    _write_manifest(
        directory,
        {
            **manifest,
            "parts": [*manifest["parts"], part] if rows else manifest["parts"],
            "previous_parts": manifest["parts"],
            "snapshot": snapshot,
            "last_delta": number if rows else number - 1,
        },
    )
    _remove_unlisted(directory)
    return rows, ""


def _record_position(
    conn: psycopg.Connection, table: _Table, manifest: dict[str, Any], keep: timedelta
) -> None:
    """The mirror's place in the table's change log, once its manifest is published; the
    positions not seen within `keep` given up; the log pruned below every position left."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO feature_platform_mirror_positions AS p "
            "VALUES (%s, %s, pg_snapshot_xmin(%s::pg_snapshot), now()) "
            "ON CONFLICT (table_name, mirror_id) DO UPDATE "
            "SET snapshot_xmin = excluded.snapshot_xmin, seen_at = excluded.seen_at",
            (manifest["mirror_id"], table.qualified, manifest["snapshot"]),
        )
        conn.execute(
            "DELETE FROM feature_platform_mirror_positions "
            "WHERE table_name = %s AND seen_at < now() - %s",
            (table.qualified, keep),
        )
        (low,) = conn.execute(  # type: ignore[misc]
            "SELECT min(snapshot_xmin) FROM feature_platform_mirror_positions "
            "WHERE table_name = %s",
            (table.qualified,),
        ).fetchone()
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} < %s::xid8").format(table.delta, sql.Identifier(XID)),
            (low,),
        )
        conn.execute(
            "DELETE FROM feature_platform_mirror_marks WHERE table_name = %s AND xid < %s::xid8",
            (table.qualified, low),
        )


def _copy_to_parquet(
    conn: psycopg.Connection, query: sql.Composable, path: Path, keep_empty: bool
) -> int:
    """The query's rows into one parquet file; for no rows, an empty file of the query's
    columns if `keep_empty`, else none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    schema, batches = postgres_copy.stream(conn, query, path.parent)
    return _write_parquet(schema, batches, path, keep_empty)


def _write_parquet(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], path: Path, keep_empty: bool
) -> int:
    """`batches` into the parquet file `path`, written aside and renamed: its rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    writer: pq.ParquetWriter | None = None
    partial = path.with_name(f".{path.name}.partial")
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(partial, schema)
            writer.write_batch(batch)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        if not keep_empty:
            return 0
        pq.write_table(schema.empty_table(), partial)
    os.replace(partial, path)
    return rows


def _compact(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Merge the parts into one file, so a read opens one file again; the new manifest."""
    part = f"{manifest['copy']}/compact-{manifest['last_delta']}.parquet"
    partial = directory / f"{manifest['copy']}/.compact.partial"
    writer: pq.ParquetWriter | None = None
    try:
        for name in manifest["parts"]:
            source = pq.ParquetFile(directory / name)
            if writer is None:
                writer = pq.ParquetWriter(partial, source.schema_arrow)
            for batch in source.iter_batches():
                writer.write_batch(batch)
    finally:
        if writer is not None:
            writer.close()
    os.replace(partial, directory / part)
    compacted = {**manifest, "parts": [part], "previous_parts": manifest["parts"]}
    _write_manifest(directory, compacted)
    _remove_unlisted(directory)
    return compacted


def _remove_unlisted(directory: Path) -> None:
    """Files neither manifest lists: parts of older copies."""
    manifest = _read_manifest(directory)
    assert manifest is not None
    keep = {directory / p for p in [*manifest["parts"], *manifest["previous_parts"]]}
    for generation in directory.glob("gen-*"):
        for path in generation.glob("*.parquet"):
            if path not in keep:
                path.unlink(missing_ok=True)
        if not any(generation.iterdir()):
            shutil.rmtree(generation, ignore_errors=True)


def rows_matching(table: pa.Table, values: Mapping[str, Any]) -> pa.ChunkedArray | pa.Array:
    """Which rows of `table` hold every column's value in `values` (none where a column
    is missing)."""
    hit: Any = pa.array([True] * table.num_rows)
    for column, value in values.items():
        if column not in table.column_names:
            return pa.array([False] * table.num_rows)
        hit = pc.and_(hit, pc.fill_null(pc.equal(table[column], pa.scalar(value)), False))
    return hit


def forget_rows(
    conn: psycopg.Connection, table: str, root: Path, values: Mapping[str, Any], remove: bool
) -> int | None:
    """The rows holding `values` (column -> value) in the mirror of `table` under `root`:
    in every part file of its copy (the current manifest's and the previous one's, kept
    for readers) and in its delta table; with `remove`, each file rewritten without them
    (atomically, under the refresh's lock) and the delta rows deleted. None when the
    table has no mirror there."""
    found = _describe(conn, table)
    (database,) = conn.execute("SELECT current_database()").fetchone()  # type: ignore[misc]
    directory = root / database / f"{found.schema}.{found.name}"
    if not directory.is_dir():
        return None
    conn.execute("SELECT pg_advisory_lock(%s, %s)", (_LOCK_SPACE, found.oid))
    try:
        rows = 0
        for path in sorted(directory.glob("gen-*/*.parquet")):
            part = pq.read_table(path)
            hit = rows_matching(part, values)
            held = pc.sum(hit).as_py() or 0
            if held and remove:
                partial = path.with_name(f".{path.name}.forget")
                pq.write_table(part.filter(pc.invert(hit)), partial)
                os.replace(partial, path)
            rows += held
        delta = conn.execute("SELECT to_regclass(%s)", (f"{found.qualified}{DELTA_SUFFIX}",))
        if delta.fetchone()[0] is not None:  # type: ignore[index]
            match = sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values
            )
            statement = sql.SQL(
                "DELETE FROM {} WHERE {}" if remove else "SELECT 1 FROM {} WHERE {}"
            )
            done = conn.execute(statement.format(found.delta, match), list(values.values()))
            rows += done.rowcount
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s)", (_LOCK_SPACE, found.oid))
    return rows
