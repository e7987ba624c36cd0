"""`feature-platform registry-backup ENV` and `registry-restore ENV`: the registry database
(Feast's SQL registry and the platform's tables: apply log, pending clean-ups,
materialization watermarks, restores) to a file and back.

The snapshot: one REPEATABLE READ, READ ONLY transaction reads every table of the
database's schema, so they are consistent with each other as of its start, the
`snapshot_at` of the file. It is taken under the apply lock, released as soon as the
snapshot exists: an apply writes the registry in many transactions, and a snapshot in
the middle of one would hold half of it and no log entry. pg_dump would give one
snapshot too, but it must be at least as new as the server, is not in the image, and
would leave the watermarks to a second step; here the table definitions come from the
catalog (columns, defaults, sequences, constraints, indexes, comments) and the rows from
COPY, whatever tables the database holds.

The restore goes into an empty database (one whose tables hold no row but Feast's
project id, written by any process that opens the registry: a restarted server does), or
replaces the tables with --replace, in one transaction under the apply lock: a damaged
file or a failure changes nothing. Then every materialization watermark later than the
snapshot is lowered to it. A watermark says that the rows created up to it are online;
after a restore the next `materialize` must read again every row created after the
snapshot, and a watermark written by a job whose clock ran ahead of the database's would
skip some. The online store itself is left as it is: loading a row again changes
nothing there. The restore is recorded in `platform_registry_restore`.

A backup's table definitions run as SQL when it is restored: restore only files this
command wrote, kept where only those who hold the database's credentials can change them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
from psycopg import IsolationLevel, sql

from feature_platform.config import environments, feast_commands
from feature_platform.config.guard import ConfigError, referenced_variables
from feature_platform.console import Say
from feature_platform.errors import PlatformError
from feature_platform.materialization.watermarks import TABLE as WATERMARKS
from feature_platform.offline import tables as offline_tables
from feature_platform.recovery.backup_file import BadBackup, Summary, Writer, records, verify
from feature_platform.rollouts import log as rollout_log
from feature_platform.rollouts.apply import LOCK_KEY, acquire_lock, lock_timeout_seconds
from feature_platform.rollouts.plan import connect, project_name

RESTORE_TABLE = "platform_registry_restore"
# Feast's SQL registry writes a project id here whenever a process opens it, before any
# apply: a database holding only that is still empty.
WRITTEN_ON_OPEN = frozenset({"feast_metadata"})
# How long the restore waits for a table another session reads (a running server).
RESTORE_LOCK_TIMEOUT = "30s"
# COPY's text reads back as written only under the same output settings: the same on both
# ends, whatever the server's or the role's defaults.
_COPY_SETTINGS = (
    "SET LOCAL client_encoding = 'UTF8'; SET LOCAL DateStyle = ISO, YMD; "
    "SET LOCAL IntervalStyle = postgres; SET LOCAL TimeZone = 'UTC'; "
    "SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = hex"
)


class NotEmpty(PlatformError):
    """The target database holds a registry: restoring over it needs --replace (exit 2)."""


def _settings(env: str) -> dict[str, str]:
    values = feast_commands.prepare(env)
    yaml_text = environments.feature_store_yaml(env).read_text()
    if "REGISTRY_DB" not in referenced_variables(yaml_text):
        raise ConfigError(
            f"{env}: registry backups need a PostgreSQL registry (REGISTRY_DB); this "
            "environment keeps its registry in a file of its own: copy that file"
        )
    return values


def _file_name(env: str, snapshot_at: datetime) -> str:
    return f"registry-{env}-{snapshot_at.astimezone(UTC):%Y%m%dT%H%M%SZ}.backup.gz"


def _backups(directory: Path, env: str) -> list[Path]:
    """`env`'s backups in `directory`, oldest first (their names sort by snapshot time)."""
    pattern = re.compile(rf"registry-{re.escape(env)}-\d{{8}}T\d{{6}}Z\.backup\.gz")
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def _versions() -> dict[str, str]:
    """The versions that wrote the backup, for whoever reads its header."""
    found = {}
    for name in ("feature-platform", "feast"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "unknown"
    return found


# --- the catalog: what each table is -------------------------------------------------------

_TABLES = """
SELECT c.oid, c.relname, obj_description(c.oid, 'pg_class')
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
  AND NOT c.relispartition
ORDER BY c.relname
"""
# Each column, with the sequence it owns (serial) or that backs it (identity).
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated, seq.relname, seq.type
FROM pg_attribute a
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN LATERAL (
  SELECT s.relname, format_type(q.seqtypid, NULL) AS type
  FROM pg_depend dep
  JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
  JOIN pg_sequence q ON q.seqrelid = s.oid
  WHERE dep.classid = 'pg_class'::regclass AND dep.refobjid = a.attrelid
    AND dep.refobjsubid = a.attnum AND dep.deptype IN ('a', 'i')
) seq ON true
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""
# NOT NULL is a column's (PostgreSQL 18 also lists it here, as contype 'n').
_CONSTRAINTS = """
SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = %s AND contype IN ('p', 'u', 'c', 'x', 'f') ORDER BY conname
"""
_INDEXES = """
SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = %s AND NOT EXISTS (
  SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
ORDER BY ic.relname
"""


def _definition(conn: psycopg.Connection, oid: int, name: str, comment: str | None) -> dict:
    columns = []
    for row in conn.execute(_COLUMNS, (oid,)).fetchall():
        column, type_, not_null, default, identity, generated, sequence, seq_type = row
        entry: dict[str, Any] = {
            "name": column,
            "type": type_,
            "not_null": not_null,
            "default": default,
            "identity": identity,
            "generated": generated,
        }
        if sequence:
            last, called = conn.execute(
                sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(sequence))
            ).fetchone() or (1, False)
            entry["sequence"] = {
                "name": sequence,
                "type": seq_type,
                "last_value": last,
                "is_called": called,
            }
        columns.append(entry)
    constraints = [
        {"name": n, "type": t, "definition": d}
        for n, t, d in conn.execute(_CONSTRAINTS, (oid,)).fetchall()
    ]
    indexes = [row[0] for row in conn.execute(_INDEXES, (oid,)).fetchall()]
    return {
        "table": name,
        "comment": comment,
        "columns": columns,
        "constraints": constraints,
        "indexes": indexes,
    }


def _data_columns(definition: Mapping[str, Any]) -> sql.Composable:
    # Generated columns are computed again on restore; COPY may not write them.
    return sql.SQL(", ").join(
        sql.Identifier(c["name"]) for c in definition["columns"] if not c["generated"]
    )


# --- backup --------------------------------------------------------------------------------


@dataclass
class Backup:
    path: Path
    snapshot_at: datetime
    tables: int
    rows: int
    size: int
    sha256: str
    removed: list[Path] = field(default_factory=list)


def backup(env: str, output: Path, retain: int | None, say: Say) -> Backup:
    """Write one snapshot of `env`'s registry database to `output` (a file, or a directory
    for `registry-ENV-<snapshot time>.backup.gz`); with `retain`, keep only the newest
    `retain` backups of `env` in that directory."""
    values = _settings(env)
    database = values["REGISTRY_DB"]
    into_directory = output.is_dir()
    if retain is not None and not into_directory:
        raise ConfigError(f"--retain needs --output to be a directory; {output} is not one")
    if not into_directory and not output.parent.is_dir():
        raise ConfigError(f"--output: no directory {output.parent}")
    with connect(values, f"feature-platform registry-backup {env}") as conn:
        acquire_lock(conn, lock_timeout_seconds(values), database, say)
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            conn.execute(_COPY_SETTINGS)
            # The first query fixes the snapshot; then applies may go on.
            row = conn.execute(
                "SELECT now(), current_schema(), current_setting('server_version')"
            ).fetchone()
            assert row is not None
            snapshot_at, schema, server = row
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            say(
                f"registry-backup {env}: snapshot of {database} at {snapshot_at.isoformat()} "
                f"(PostgreSQL {server.split()[0]})"
            )
            path = output / _file_name(env, snapshot_at) if into_directory else output
            header = {
                "environment": env,
                "database": database,
                "project": project_name(env),
                "schema": schema,
                "snapshot_at": snapshot_at.isoformat(),
                "server_version": server,
                "taken_by": rollout_log.actor(values),
                "versions": _versions(),
            }
            writer = Writer(path, header)
            try:
                _write_tables(conn, writer, say)
                sha256 = writer.finish()
            except BaseException:
                writer.discard()
                raise
    done = Backup(
        path, snapshot_at, len(writer.rows), sum(writer.rows.values()), path.stat().st_size, sha256
    )
    say(
        f"registry-backup {env}: {done.tables} tables, {done.rows:,} rows -> {path} "
        f"({done.size:,} bytes, sha256 {sha256[:16]}...)"
    )
    if retain is not None:
        done.removed = _prune(output, env, retain, say)
    return done


def _write_tables(conn: psycopg.Connection, writer: Writer, say: Say) -> None:
    for oid, name, comment in conn.execute(_TABLES).fetchall():
        definition = _definition(conn, oid, name, comment)
        writer.table(definition)
        copy_out = sql.SQL("COPY {} ({}) TO STDOUT").format(
            sql.Identifier(name), _data_columns(definition)
        )
        with conn.cursor() as cur, cur.copy(copy_out) as copy:
            for line in copy:
                writer.row(line)
        writer.end_table()
        say(f"  {name}: {writer.rows[name]:,} rows")


def _prune(directory: Path, env: str, retain: int, say: Say) -> list[Path]:
    """Delete all but the newest `retain` backups of `env`, and what killed runs left."""
    for partial in directory.glob(f".registry-{env}-*.backup.gz.partial"):
        partial.unlink(missing_ok=True)
    found = _backups(directory, env)
    removed = found[: max(0, len(found) - retain)]
    for path in removed:
        path.unlink()
    if removed:
        say(
            f"  removed {len(removed)} older backup(s), keeping the newest {retain}: "
            f"{', '.join(p.name for p in removed)}"
        )
    return removed


# --- restore -------------------------------------------------------------------------------


@dataclass
class Restored:
    path: Path
    summary: Summary
    replaced: list[str]
    # view -> its watermark before it was lowered to the snapshot time
    lowered: dict[str, datetime]


def newest_backup(directory: Path, env: str) -> Path:
    found = _backups(directory, env)
    if not found:
        raise BadBackup(f"no backup of {env} in {directory} (registry-{env}-*.backup.gz)")
    return found[-1]


def restore(env: str, source: Path, replace: bool, say: Say) -> Restored:
    """Restore `env`'s registry database from the backup `source` (or the newest backup
    of `env` in the directory `source`): BadBackup for a damaged file or another
    environment's, NotEmpty for a database that holds a registry unless `replace`."""
    values = _settings(env)
    database = values["REGISTRY_DB"]
    path = newest_backup(source, env) if source.is_dir() else source
    summary = verify(path)
    header = summary.header
    if header.get("environment") != env:
        raise BadBackup(
            f"{path.name} is a backup of environment {header.get('environment')!r}, not {env!r}"
        )
    say(
        f"registry-restore {env}: {path.name}: {len(summary.tables)} tables, "
        f"{summary.total_rows:,} rows of {header.get('database')} at {header.get('snapshot_at')} "
        "(checksum verified)"
    )
    offline_tables.ensure_databases(values, say, names=("REGISTRY_DB",))
    with connect(values, f"feature-platform registry-restore {env}") as conn:
        acquire_lock(conn, lock_timeout_seconds(values), database, say)
        with conn.transaction():
            conn.execute(_COPY_SETTINGS)
            conn.execute(f"SET LOCAL lock_timeout = '{RESTORE_LOCK_TIMEOUT}'")
            replaced = _clear(conn, database, header, replace, say)
            _load(conn, path, say)
            snapshot_at = datetime.fromisoformat(str(header["snapshot_at"]))
            lowered = _lower_watermarks(conn, snapshot_at)
            _record(conn, env, path, summary, bool(replaced), lowered, values)
    for view, before in sorted(lowered.items()):
        say(f"  watermark of {view} lowered from {before.isoformat()} to the snapshot time")
    say(
        f"registry-restore {env}: restored {len(summary.tables)} tables, "
        f"{summary.total_rows:,} rows into {database}"
    )
    return Restored(path, summary, replaced, lowered)


def _clear(
    conn: psycopg.Connection, database: str, header: Mapping[str, Any], replace: bool, say: Say
) -> list[str]:
    """Drop the database's tables, refusing unless they are empty or `replace`; the
    names of the tables that held rows."""
    row = conn.execute("SELECT current_schema()").fetchone()
    schema = row[0] if row else None
    if schema != header.get("schema"):
        raise BadBackup(
            f"the backup is of schema {header.get('schema')!r}; {database}'s current schema "
            f"is {schema!r}"
        )
    existing = [name for _oid, name, _comment in conn.execute(_TABLES).fetchall()]
    holding = [name for name in existing if name not in WRITTEN_ON_OPEN and _has_rows(conn, name)]
    if holding and not replace:
        raise NotEmpty(
            f"{database} is not empty ({len(holding)} table(s) hold rows: "
            f"{', '.join(holding[:4])}{', ...' if len(holding) > 4 else ''}); restore into "
            "an empty database, or pass --replace to drop its tables first"
        )
    if holding:
        say(f"  replacing {len(holding)} table(s) that hold rows (--replace)")
    if existing:
        conn.execute(
            sql.SQL("DROP TABLE {} CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(name) for name in existing)
            )
        )
    return holding


def _has_rows(conn: psycopg.Connection, table: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(table))
    row = conn.execute(query).fetchone()
    return bool(row and row[0])


def _load(conn: psycopg.Connection, path: Path, say: Say) -> None:
    """Create each table of the file and copy its rows in; the constraints between tables
    once all are in."""
    events: Iterator[tuple[str, Any]] = records(path)
    foreign_keys: list[sql.Composed] = []
    for kind, definition in events:
        if kind != "table":
            continue
        name = sql.Identifier(definition["table"])
        _create_table(conn, definition)
        copy_in = sql.SQL("COPY {} ({}) FROM STDIN").format(name, _data_columns(definition))
        rows = 0
        with conn.cursor() as cur, cur.copy(copy_in) as copy:
            # The same events, up to the end of this table's rows.
            for row_kind, line in events:
                if row_kind == "end_table":
                    break
                copy.write(line)
                rows += 1
        for constraint in definition["constraints"]:
            add = sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                name, sql.Identifier(constraint["name"]), sql.SQL(constraint["definition"])
            )
            if constraint["type"] == "f":
                foreign_keys.append(add)
            else:
                conn.execute(add)
        for index in definition["indexes"]:
            conn.execute(sql.SQL(index))
        for column in definition["columns"]:
            if "sequence" in column:
                sequence = column["sequence"]
                conn.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)",
                    (name.as_string(conn), column["name"], sequence["last_value"],
                     sequence["is_called"]),
                )  # fmt: skip
        say(f"  {definition['table']}: {rows:,} rows")
    for statement in foreign_keys:
        conn.execute(statement)


def _create_table(conn: psycopg.Connection, definition: Mapping[str, Any]) -> None:
    name = sql.Identifier(definition["table"])
    columns = []
    owned = []
    for column in definition["columns"]:
        parts: list[sql.Composable] = [sql.Identifier(column["name"]), sql.SQL(column["type"])]
        if column["identity"]:
            kind = "ALWAYS" if column["identity"] == "a" else "BY DEFAULT"
            parts.append(sql.SQL(f"GENERATED {kind} AS IDENTITY"))
        elif column["generated"]:
            parts.append(
                sql.SQL("GENERATED ALWAYS AS ({}) STORED").format(sql.SQL(column["default"]))
            )
        else:
            if "sequence" in column:
                # A serial column's own sequence, created before the default names it.
                sequence = sql.Identifier(column["sequence"]["name"])
                conn.execute(sql.SQL("DROP SEQUENCE IF EXISTS {} CASCADE").format(sequence))
                conn.execute(
                    sql.SQL("CREATE SEQUENCE {} AS {}").format(
                        sequence, sql.SQL(column["sequence"]["type"])
                    )
                )
                owned.append((sequence, sql.Identifier(column["name"])))
            if column["default"] is not None:
                parts += [sql.SQL("DEFAULT"), sql.SQL(column["default"])]
        if column["not_null"]:
            parts.append(sql.SQL("NOT NULL"))
        columns.append(sql.SQL(" ").join(parts))
    conn.execute(sql.SQL("CREATE TABLE {} ({})").format(name, sql.SQL(", ").join(columns)))
    for sequence, column_name in owned:
        conn.execute(
            sql.SQL("ALTER SEQUENCE {} OWNED BY {}.{}").format(sequence, name, column_name)
        )
    if definition.get("comment"):
        conn.execute(
            sql.SQL("COMMENT ON TABLE {} IS {}").format(name, sql.Literal(definition["comment"]))
        )


def _lower_watermarks(conn: psycopg.Connection, snapshot_at: datetime) -> dict[str, datetime]:
    """Lower every watermark later than the snapshot to it: the next run reads every row
    created since the snapshot (less its overlap). view -> the watermark it had."""
    exists = conn.execute("SELECT to_regclass(%s)", (WATERMARKS.name,)).fetchone()
    if not exists or exists[0] is None:
        return {}
    c = WATERMARKS.c
    rows = conn.execute(
        sql.SQL(
            "UPDATE {table} w SET {until} = %(snapshot)s, {updated} = now() FROM {table} old "
            "WHERE old.{project} = w.{project} AND old.{view} = w.{view} "
            "AND w.{until} > %(snapshot)s RETURNING w.{view}, old.{until}"
        ).format(
            table=sql.Identifier(WATERMARKS.name),
            until=sql.Identifier(c.created_until.name),
            updated=sql.Identifier(c.updated_at.name),
            project=sql.Identifier(c.project.name),
            view=sql.Identifier(c.feature_view.name),
        ),
        {"snapshot": snapshot_at},
    ).fetchall()
    return {view: before for view, before in rows}


def _record(
    conn: psycopg.Connection,
    env: str,
    path: Path,
    summary: Summary,
    replaced: bool,
    lowered: Mapping[str, datetime],
    values: Mapping[str, str],
) -> None:
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {RESTORE_TABLE} (
            id bigserial PRIMARY KEY,
            restored_at timestamptz NOT NULL DEFAULT now(),
            environment text NOT NULL,
            actor text NOT NULL,
            backup_file text NOT NULL,
            backup_sha256 text NOT NULL,
            snapshot_at timestamptz NOT NULL,
            tables integer NOT NULL,
            rows bigint NOT NULL,
            replaced boolean NOT NULL,
            watermarks_lowered text[] NOT NULL
        )"""
    )
    conn.execute(
        f"COMMENT ON TABLE {RESTORE_TABLE} IS 'One row per feature-platform registry-restore: "
        "the backup restored, its snapshot time, and the views whose materialization "
        "watermark was lowered to it'"
    )
    conn.execute(
        f"INSERT INTO {RESTORE_TABLE} (environment, actor, backup_file, backup_sha256, "
        "snapshot_at, tables, rows, replaced, watermarks_lowered) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            env,
            rollout_log.actor(values),
            path.name,
            summary.sha256,
            summary.header["snapshot_at"],
            len(summary.tables),
            summary.total_rows,
            replaced,
            sorted(lowered),
        ),
    )
