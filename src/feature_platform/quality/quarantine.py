"""The quarantine table: rows set aside for breaking their view's expectations, kept in
the environment's offline database (`platform_quarantine`; local: `quarantine.db`, SQLite,
under PLATFORM_DATA_DIR). Each row is kept as JSON with its view, the rules it broke,
when and where it came from (`push`, `write-to-online-store`)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from feast.repo_config import RepoConfig

from feature_platform.feast_seam.stores import postgres_conn_kwargs, postgres_conninfo
from feature_platform.offline import tables as offline_tables
from feature_platform.stores.postgres_offline import PostgreSQLOfflineStoreConfig

TABLE = "platform_quarantine"
SQLITE_FILE = "quarantine.db"
COLUMNS = ("id", "quarantined_at", "source", "feature_view", "rules", "row")

_POSTGRES_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id bigserial PRIMARY KEY,
    quarantined_at timestamptz NOT NULL,
    source text NOT NULL,
    feature_view text NOT NULL,
    rules text NOT NULL,
    row jsonb NOT NULL
)"""
_SQLITE_DDL = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    quarantined_at TEXT NOT NULL,
    source TEXT NOT NULL,
    feature_view TEXT NOT NULL,
    rules TEXT NOT NULL,
    row TEXT NOT NULL
)"""


@dataclass(frozen=True)
class Target:
    """Where the table is: a PostgreSQL database (conninfo and connection arguments) or,
    locally, a SQLite file."""

    conninfo: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    sqlite: Path | None = None


@dataclass(frozen=True)
class Quarantined:
    view: str
    rules: str
    row: dict[str, Any]
    source: str
    at: datetime


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


def entries(
    rows: pd.DataFrame, set_aside: Mapping[int, Mapping[str, list[str]]], source: str, at: datetime
) -> list[Quarantined]:
    """The quarantine entries of the rows `set_aside` (row position -> view -> the rules
    it broke): one per row and view, the row as JSON (times ISO 8601, to the microsecond)."""
    data = json.loads(
        rows.iloc[sorted(set_aside)].to_json(orient="records", date_format="iso", date_unit="us")
    )
    return [
        Quarantined(view, "; ".join(rules), row, source, at)
        for row, (_, by_view) in zip(data, sorted(set_aside.items()), strict=True)
        for view, rules in by_view.items()
    ]


def write(target: Target, entries: Sequence[Quarantined]) -> None:
    """Add `entries` to the table, in one transaction; the table is created when missing."""
    if not entries:
        return
    values = [
        (e.at.isoformat(), e.source, e.view, e.rules, json.dumps(e.row, sort_keys=True))
        for e in entries
    ]
    insert = (
        f"INSERT INTO {TABLE} (quarantined_at, source, feature_view, rules, row) "
        "VALUES (%s, %s, %s, %s, %s)"
    )
    if target.sqlite is not None:
        with closing(sqlite3.connect(target.sqlite, timeout=5)) as lite, lite:
            lite.execute(_SQLITE_DDL)
            lite.executemany(insert.replace("%s", "?"), values)
        return
    with psycopg.connect(target.conninfo, **target.kwargs) as pg, pg.cursor() as cursor:
        cursor.execute(_POSTGRES_DDL)
        cursor.executemany(insert, values)


def read(target: Target, view: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` entries, newest first; of one view, or of all."""
    where, params = ("WHERE feature_view = %s", [view]) if view else ("", [])
    query = (
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} {where} "
        "ORDER BY quarantined_at DESC, id DESC LIMIT %s"
    )
    if target.sqlite is not None:
        if not target.sqlite.exists():
            return []
        with closing(sqlite3.connect(target.sqlite, timeout=5)) as lite:
            lite.execute(_SQLITE_DDL)
            found = lite.execute(query.replace("%s", "?"), [*params, limit]).fetchall()
        return [_entry(row, json.loads(row[5])) for row in found]
    with psycopg.connect(target.conninfo, **target.kwargs) as pg, pg.cursor() as cursor:
        cursor.execute(_POSTGRES_DDL)
        cursor.execute(query, [*params, limit])
        return [_entry(row, row[5]) for row in cursor.fetchall()]


def _entry(row: Sequence[Any], data: dict[str, Any]) -> dict[str, Any]:
    entry = dict(zip(COLUMNS, row, strict=True))
    at = entry["quarantined_at"]
    entry["quarantined_at"] = at.isoformat() if isinstance(at, datetime) else at
    entry["row"] = data
    return entry
