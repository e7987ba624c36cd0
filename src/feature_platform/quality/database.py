"""Where the platform's quality tables live: the environment's offline database
(PostgreSQL), or locally a SQLite file under PLATFORM_DATA_DIR: the quarantine, the
recorded training sets and the feature statistics."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from feast.repo_config import RepoConfig

from feature_platform.feast_seam.stores import postgres_conn_kwargs, postgres_conninfo
from feature_platform.offline import tables as offline_tables
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig

SQLITE_FILE = "quality.db"
# a column's kind -> (PostgreSQL type, SQLite type)
KINDS = {
    "id": ("bigserial PRIMARY KEY", "INTEGER PRIMARY KEY AUTOINCREMENT"),
    "time": ("timestamptz NOT NULL", "TEXT NOT NULL"),
    "text": ("text NOT NULL", "TEXT NOT NULL"),
    "int": ("bigint NOT NULL", "INTEGER NOT NULL"),
    "bool": ("boolean NOT NULL", "INTEGER NOT NULL"),
    "json": ("jsonb NOT NULL", "TEXT NOT NULL"),
    "blob": ("bytea NOT NULL", "BLOB NOT NULL"),
}


@dataclass(frozen=True)
class Target:
    """Where the tables are: a PostgreSQL database (conninfo and connection arguments) or,
    locally, a SQLite file."""

    conninfo: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    sqlite: Path | None = None

    @contextmanager
    def cursor(self) -> Iterator[Any]:
        """A cursor in one transaction, committed on leaving; SQLite's takes `%s`
        placeholders too, as Postgres's do."""
        if self.sqlite is not None:
            self.sqlite.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.sqlite, timeout=5)) as lite, lite:
                yield _Qmark(lite.cursor())
            return
        with psycopg.connect(self.conninfo, **self.kwargs) as pg, pg.cursor() as cursor:
            yield cursor

    def create(self, table: str, columns: Mapping[str, str]) -> str:
        """`CREATE TABLE IF NOT EXISTS` in this database's dialect; `columns` maps each
        name to a kind of KINDS."""
        dialect = 1 if self.sqlite is not None else 0
        kinds = ", ".join(f"{name} {KINDS[kind][dialect]}" for name, kind in columns.items())
        return f"CREATE TABLE IF NOT EXISTS {table} ({kinds})"


def decoded(
    names: Sequence[str], found: Sequence[Sequence[Any]], json_columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Selected rows as mappings of `names`, their JSON columns decoded (SQLite hands
    them back as text, PostgreSQL's jsonb as values)."""
    rows = []
    for row in found:
        values = dict(zip(names, row, strict=True))
        for column in json_columns:
            if isinstance(values[column], str):
                values[column] = json.loads(values[column])
        rows.append(values)
    return rows


class _Qmark:
    """A SQLite cursor that reads `%s` placeholders as `?`."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    def execute(self, query: str, params: Any = ()) -> _Qmark:
        self._cursor.execute(query.replace("%s", "?"), params)
        return self

    def executemany(self, query: str, params: Any) -> None:
        self._cursor.executemany(query.replace("%s", "?"), params)

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()


def for_store(config: RepoConfig, timeout_s: float = 5) -> Target:
    """The table beside the stores a server or a job writes to: the PostgreSQL offline
    store's database (its connection bounded by `timeout_s`), else PLATFORM_DATA_DIR's
    file."""
    store = config.offline_store
    if isinstance(store, PostgreSQLOfflineStoreConfig):
        kwargs = postgres_conn_kwargs(store)
        kwargs["options"] += f" -c lock_timeout={timeout_s}s -c statement_timeout={timeout_s}s"
        kwargs["connect_timeout"] = int(max(1, timeout_s))
        return Target(conninfo=postgres_conninfo(store), kwargs=kwargs)
    # local: beside the SQLite online store, in PLATFORM_DATA_DIR as `for_settings` finds it
    return Target(sqlite=Path(config.online_store.path).parent / SQLITE_FILE)


def for_settings(settings: Mapping[str, str]) -> Target:
    """The table of an environment, from its settings (the commands)."""
    if offline_tables.source_kind(settings) == "postgres":
        return Target(conninfo=offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"]))
    return Target(sqlite=Path(settings["PLATFORM_DATA_DIR"]) / SQLITE_FILE)
