"""The parquet mirror of a Postgres offline table holds exactly the table's rows after
every refresh: after inserts (statements and COPY), updates, deletes, truncation, a table
replaced or altered, writers running during refreshes, a refresh that died between its
copy and its manifest, and a second mirror directory taking the delta over."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_platform.offline import mirror as offline_mirror

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DSN = "host=127.0.0.1 port=5432 user=postgres"


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"feast_test_mirror_{os.getpid()}"
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    yield name
    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def connect(database: str) -> Iterator[Callable[[], psycopg.Connection]]:
    def connect() -> psycopg.Connection:
        return psycopg.connect(f"{DSN} dbname={database}")

    with connect() as conn:
        conn.execute("DROP TABLE IF EXISTS stats, stats__mirror_delta CASCADE")
        conn.execute(
            "CREATE TABLE stats (customer_id bigint, event_timestamp timestamptz, "
            "created_timestamp timestamptz, value double precision, label text, flag boolean)"
        )
        if _has_marks(conn):
            conn.execute("DELETE FROM feature_platform_mirror_marks")
    yield connect


def _has_marks(conn: psycopg.Connection) -> bool:
    found = conn.execute("SELECT to_regclass('feature_platform_mirror_marks')").fetchone()
    return bool(found and found[0])


def _insert(connect: Callable[[], psycopg.Connection], start: int, n: int) -> None:
    with connect() as conn:
        conn.cursor().executemany(
            "INSERT INTO stats VALUES (%s, %s, %s, %s, %s, %s)",
            [_row(i) for i in range(start, start + n)],
        )


def _row(i: int) -> tuple[Any, ...]:
    created = None if i % 7 == 0 else T0 + timedelta(hours=i, minutes=5)
    value = float("nan") if i % 11 == 0 else i / 3
    label = None if i % 5 == 0 else ("" if i % 13 == 0 else f'l,"{i}"\n')
    return (i % 17, T0 + timedelta(hours=i), created, value, label, i % 2 == 0)


def _table_rows(connect: Callable[[], psycopg.Connection]) -> list[tuple[Any, ...]]:
    with connect() as conn:
        rows = conn.execute("SELECT * FROM stats").fetchall()
    return sorted((_comparable(r) for r in rows), key=repr)


def _comparable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    # NaN != NaN: compare it as a marker.
    return tuple("NaN" if isinstance(v, float) and v != v else v for v in row)


def _mirror_rows(mirrored: offline_mirror.Mirrored) -> list[tuple[Any, ...]]:
    table = pa.concat_tables(pq.read_table(p) for p in mirrored.parts)
    rows = zip(*(table.column(i).to_pylist() for i in range(table.num_columns)), strict=True)
    return sorted((_comparable(r) for r in rows), key=repr)


def _refresh(connect: Callable[[], psycopg.Connection], root: Path) -> offline_mirror.Mirrored:
    return offline_mirror.refresh(connect, "stats", root, lambda _: None)


def test_full_copy_then_only_new_rows(connect: Callable, tmp_path: Path) -> None:
    _insert(connect, 0, 200)
    first = _refresh(connect, tmp_path)
    assert first.full and first.copied_rows == 200
    assert _mirror_rows(first) == _table_rows(connect)
    schema = pq.read_schema(first.parts[0])
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("flag").type == pa.bool_()

    assert _refresh(connect, tmp_path).copied_rows == 0
    _insert(connect, 200, 30)
    with connect() as conn, conn.cursor() as cur, cur.copy("COPY stats FROM STDIN") as copy:
        for i in range(230, 240):
            copy.write_row(_row(i))
    second = _refresh(connect, tmp_path)
    assert not second.full and second.copied_rows == 40 and len(second.parts) == 2
    assert _mirror_rows(second) == _table_rows(connect)


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE stats SET value = value + 1 WHERE customer_id = 3",
        "DELETE FROM stats WHERE customer_id = 4",
        "TRUNCATE stats",
        "ALTER TABLE stats ADD COLUMN extra bigint DEFAULT 7",
        "ALTER TABLE stats DROP COLUMN flag",
    ],
)
def test_changes_other_than_inserts_copy_the_table_whole(
    connect: Callable, tmp_path: Path, change: str
) -> None:
    _insert(connect, 0, 100)
    _refresh(connect, tmp_path)
    with connect() as conn:
        conn.execute(change)
    # An insert after an altered table's columns changed still succeeds.
    with connect() as conn:
        conn.execute("INSERT INTO stats (customer_id, event_timestamp) VALUES (99, %s)", (T0,))
    after = _refresh(connect, tmp_path)
    assert after.full
    assert _mirror_rows(after) == _table_rows(connect)
    assert not _refresh(connect, tmp_path).full


def test_a_replaced_table_is_copied_whole(connect: Callable, tmp_path: Path) -> None:
    _insert(connect, 0, 50)
    _refresh(connect, tmp_path)
    with connect() as conn:
        conn.execute("DROP TABLE stats")
        conn.execute("CREATE TABLE stats AS SELECT * FROM stats__mirror_delta LIMIT 0")
        conn.execute("ALTER TABLE stats DROP COLUMN __mirror_batch")
    _insert(connect, 1000, 5)
    after = _refresh(connect, tmp_path)
    assert after.full and _mirror_rows(after) == _table_rows(connect)


@pytest.mark.parametrize("copy", ["delta", "full", "full in ranges"])
def test_writers_during_refreshes_lose_and_double_nothing(
    connect: Callable, tmp_path: Path, copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta: every refresh after the first copies new rows. Full: two mirror
    directories take turns, so every refresh copies the table whole while rows arrive;
    in ranges: each whole copy split in block ranges read on three connections."""
    if copy == "full in ranges":
        monkeypatch.setattr(offline_mirror, "RANGE_PAGES", 1)
        monkeypatch.setattr(offline_mirror, "COPIES_AT_ONCE", 3)
    whole = copy.startswith("full")
    _insert(connect, 0, 100)
    _refresh(connect, tmp_path)
    stop = threading.Event()
    written = []

    def writer() -> None:
        start = 100
        # Bounded: at most 300 statements of 5 rows.
        for _ in range(300):
            if stop.is_set():
                return
            _insert(connect, start, 5)
            written.append(5)
            start += 5

    thread = threading.Thread(target=writer)
    thread.start()
    refreshes = []
    try:
        for i in range(30):
            root = tmp_path / str(i % 2) if whole else tmp_path
            refreshes.append(_refresh(connect, root))
            assert len(refreshes[-1].parts) <= offline_mirror.MAX_PARTS + 1
            # Each refresh is exact as of its own snapshot: nothing it holds is doubled.
            rows = _mirror_rows(refreshes[-1])
            assert len(rows) == len(set(rows))
    finally:
        stop.set()
        thread.join(timeout=60)
    assert sum(written) > 0 and any(r.copied_rows for r in refreshes)
    assert all(r.full == whole for r in refreshes[1:])
    if copy == "full in ranges":
        assert max(len(r.parts) for r in refreshes) == 3
    final = _refresh(connect, tmp_path / "1" if whole else tmp_path)
    assert len(_mirror_rows(final)) == 100 + sum(written)
    assert _mirror_rows(final) == _table_rows(connect)


def test_a_refresh_that_died_before_its_manifest_loses_nothing(
    connect: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _insert(connect, 0, 20)
    _refresh(connect, tmp_path)
    _insert(connect, 20, 10)
    real = offline_mirror._write_manifest

    def dies(directory: Path, manifest: dict) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(offline_mirror, "_write_manifest", dies)
    with pytest.raises(OSError, match="disk gone"):
        _refresh(connect, tmp_path)
    monkeypatch.setattr(offline_mirror, "_write_manifest", real)
    _insert(connect, 30, 3)
    after = _refresh(connect, tmp_path)
    assert not after.full and after.copied_rows == 13
    assert _mirror_rows(after) == _table_rows(connect)


def test_a_second_mirror_takes_the_delta_and_the_first_copies_again(
    connect: Callable, tmp_path: Path
) -> None:
    _insert(connect, 0, 20)
    _refresh(connect, tmp_path / "a")
    second = _refresh(connect, tmp_path / "b")
    assert second.full
    _insert(connect, 20, 4)
    assert not _refresh(connect, tmp_path / "b").full
    first = _refresh(connect, tmp_path / "a")
    assert first.full and _mirror_rows(first) == _table_rows(connect)


def test_views_and_missing_tables_are_refused(connect: Callable, tmp_path: Path) -> None:
    with connect() as conn:
        conn.execute("CREATE OR REPLACE VIEW stats_view AS SELECT * FROM stats")
    with pytest.raises(offline_mirror.MirrorError, match="not a table"):
        offline_mirror.refresh(connect, "stats_view", tmp_path, lambda _: None)
    with pytest.raises(offline_mirror.MirrorError, match="no table"):
        offline_mirror.refresh(connect, "no_such_table", tmp_path, lambda _: None)


def test_rows_written_between_the_delta_start_and_the_copy_are_held_once(
    connect: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that commits after the triggers exist but before the copy's snapshot is
    both in the table and in the delta: the copy deletes it from the delta."""
    _insert(connect, 0, 10)
    real = offline_mirror._copy_table

    def write_first(conn: psycopg.Connection, *args: Any) -> tuple[int, list[str]]:
        _insert(connect, 10, 4)
        return real(conn, *args)

    monkeypatch.setattr(offline_mirror, "_copy_table", write_first)
    first = _refresh(connect, tmp_path)
    monkeypatch.setattr(offline_mirror, "_copy_table", real)
    assert first.full and first.copied_rows == 14
    after = _refresh(connect, tmp_path)
    assert not after.full and after.copied_rows == 0
    assert _mirror_rows(after) == _table_rows(connect)


def test_tables_refreshed_at_once_are_each_exact(
    connect: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several refreshes at once each install the mirror's functions (CREATE OR REPLACE
    of the same rows in pg_proc), so that setup must not race; each table's copy is its
    own."""
    monkeypatch.setattr(offline_mirror, "COPIES_AT_ONCE", 4)
    names = [f"stats_{i}" for i in range(4)]
    _insert(connect, 0, 40)
    with connect() as conn:
        for i, name in enumerate(names):
            conn.execute(f"DROP TABLE IF EXISTS {name}, {name}__mirror_delta")
            conn.execute(f"CREATE TABLE {name} AS SELECT * FROM stats WHERE customer_id > {i}")
    for _ in range(5):
        mirrored = offline_mirror.refresh_all(connect, names, tmp_path, lambda _: None)
        for name in names:
            with connect() as conn:
                rows = conn.execute(f"SELECT * FROM {name}").fetchall()
            expected = sorted((_comparable(r) for r in rows), key=repr)
            assert _mirror_rows(mirrored[name]) == expected
