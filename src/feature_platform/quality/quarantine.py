"""The quarantine table: rows set aside for breaking their view's expectations, kept in
the environment's offline database (`platform_quarantine`; local: `quality.db`, SQLite,
under PLATFORM_DATA_DIR). Each row is kept as JSON with its view, the rules it broke,
when and where it came from (`push`, `write-to-online-store`, `materialization`).

A row quarantined by materialization is moved: it leaves its offline table as it enters
the quarantine table (`Origin`), so training no more reads it than the online store
does."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from feature_platform.offline import tables as offline_tables
from feature_platform.quality.database import Target

TABLE = "platform_quarantine"
# name -> kind (`database.KINDS`)
COLUMNS = {"id": "id", "quarantined_at": "time", "source": "text", "feature_view": "text",
           "rules": "text", "row": "json"}  # fmt: skip


@dataclass(frozen=True)
class Origin:
    """The offline table a batch was read from: a Postgres table (in the target's
    database) or, locally, a parquet file; `columns` (join keys, event time, created
    time) name a row there, `named` maps each to the batch's name for it."""

    columns: Sequence[str]
    named: Mapping[str, str]
    table: str = ""
    parquet: Path | None = None

    def keys(self, rows: pd.DataFrame) -> list[tuple[Any, ...]]:
        """Each row's values of `columns`, as Python values."""
        picked = rows[[self.named[c] for c in self.columns]]
        return [
            tuple(v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in row)
            for row in picked.astype(object).itertuples(index=False)
        ]


@dataclass(frozen=True)
class Quarantined:
    view: str
    rules: str
    row: dict[str, Any]
    source: str
    at: datetime


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


def write(
    target: Target,
    entries: Sequence[Quarantined],
    origin: Origin | None = None,
    withdrawn: Sequence[tuple[Any, ...]] = (),
) -> None:
    """Add `entries` to the table, in one transaction; the table is created when missing.
    With `origin`, the `withdrawn` rows (their `Origin.keys`) leave it in that transaction
    (a parquet file: rewritten after it)."""
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
    with target.cursor() as cursor:
        cursor.execute(target.create(TABLE, COLUMNS))
        cursor.executemany(insert, values)
        if origin is not None and origin.table:
            match = sql.SQL(" AND ").join(
                sql.SQL("{} = %s").format(sql.Identifier(c)) for c in origin.columns
            )
            table = offline_tables.identifier(origin.table)
            cursor.executemany(sql.SQL("DELETE FROM {} WHERE {}").format(table, match), withdrawn)
    if origin is not None and origin.parquet is not None:
        _withdraw_parquet(origin.parquet, origin.columns, withdrawn)


def _withdraw_parquet(
    path: Path, columns: Sequence[str], withdrawn: Sequence[tuple[Any, ...]]
) -> None:
    table = pq.read_table(path)
    gone = pd.DataFrame(list(withdrawn), columns=list(columns))
    held = table.select(list(columns)).to_pandas()
    for column in columns:
        if isinstance(held[column].dtype, pd.DatetimeTZDtype):
            gone[column] = pd.to_datetime(gone[column], utc=True).dt.tz_convert(held[column].dt.tz)
    found = held.merge(gone.drop_duplicates(), how="left", on=list(columns), indicator=True)
    keep = (found["_merge"] == "left_only").to_numpy()
    if keep.all():
        return
    partial = path.with_suffix(".parquet.partial")
    pq.write_table(table.filter(pa.array(keep)), partial)
    partial.replace(path)


def read(target: Target, view: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` entries, newest first; of one view, or of all."""
    where, params = ("WHERE feature_view = %s", [view]) if view else ("", [])
    query = (
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} {where} "
        "ORDER BY quarantined_at DESC, id DESC LIMIT %s"
    )
    if target.sqlite is not None and not target.sqlite.exists():
        return []
    with target.cursor() as cursor:
        cursor.execute(target.create(TABLE, COLUMNS))
        found = cursor.execute(query, [*params, limit]).fetchall()
    return [_entry(row) for row in found]


def _entry(row: Sequence[Any]) -> dict[str, Any]:
    entry = dict(zip(COLUMNS, row, strict=True))
    at = entry["quarantined_at"]
    entry["quarantined_at"] = at.isoformat() if isinstance(at, datetime) else at
    # PostgreSQL returns jsonb parsed; SQLite keeps the text
    if isinstance(entry["row"], str):
        entry["row"] = json.loads(entry["row"])
    return entry
