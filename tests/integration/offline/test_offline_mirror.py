"""The parquet mirror of a Postgres offline table holds exactly the table's rows after
every refresh: after inserts (statements and COPY), updates, deletes, truncation, a table
replaced or altered, writers running during refreshes or committing out of order around
one, a refresh that died between its copy and its manifest, and several mirror
directories over the same table, each with its own place in the change log."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import module_database
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from feature_platform.offline import mirror as offline_mirror

T0 = datetime(2026, 1, 1, tzinfo=UTC)

DSN = module_database.DSN


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    yield from module_database.scratch("mirror")


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
            conn.execute("DELETE FROM feature_platform_mirror_positions")
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
        conn.execute("ALTER TABLE stats DROP COLUMN __mirror_xid")
    _insert(connect, 1000, 5)
    after = _refresh(connect, tmp_path)
    assert after.full and _mirror_rows(after) == _table_rows(connect)


@pytest.mark.parametrize("copy", ["delta", "full", "full in ranges"])
def test_writers_during_refreshes_lose_and_double_nothing(
    connect: Callable, tmp_path: Path, copy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delta: every refresh after the first copies new rows. Full: an UPDATE of no rows
    before each refresh marks the table, so every refresh copies it whole while rows
    arrive, two mirror directories taking turns; in ranges: each whole copy split in
    block ranges read on three connections."""
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
            if whole:
                with connect() as conn:
                    conn.execute("UPDATE stats SET value = 0 WHERE false")
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
    if whole:
        with connect() as conn:
            conn.execute("UPDATE stats SET value = 0 WHERE false")
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


def test_mirrors_refreshed_in_turn_each_stay_incremental(connect: Callable, tmp_path: Path) -> None:
    """Two mirror directories over one table, refreshed alternately with inserts between:
    each equals the table after every refresh and copies whole only the first time."""
    _insert(connect, 0, 20)
    start = 20
    for round_ in range(4):
        for name in ("a", "b"):
            mirrored = _refresh(connect, tmp_path / name)
            assert mirrored.full == (round_ == 0), (round_, name, mirrored.why)
            assert _mirror_rows(mirrored) == _table_rows(connect)
            if round_:
                # Each reads the rows written since its own last refresh, both batches.
                assert mirrored.copied_rows == 6
            _insert(connect, start, 3)
            start += 3
    with connect() as conn:
        (held,) = conn.execute("SELECT count(*) FROM stats__mirror_delta").fetchone()
    assert held <= 6, "the log is pruned below both mirrors' positions"


def test_writers_committing_out_of_order_are_read_once(connect: Callable, tmp_path: Path) -> None:
    """A transaction holding uncommitted rows while another commits and a refresh runs:
    the refresh has the committed rows only, and the next one the late rows, once."""
    _insert(connect, 0, 10)
    _refresh(connect, tmp_path / "a")
    _refresh(connect, tmp_path / "b")
    with connect() as late:
        late.execute("INSERT INTO stats VALUES (%s, %s, %s, %s, %s, %s)", _row(100))
        _insert(connect, 10, 5)  # an earlier-started writer's rows commit first
        during = _refresh(connect, tmp_path / "a")
        assert not during.full and during.copied_rows == 5
        assert len(_mirror_rows(during)) == 15
        late.commit()
    _insert(connect, 15, 2)
    after = _refresh(connect, tmp_path / "a")
    assert not after.full and after.copied_rows == 3
    assert _mirror_rows(after) == _table_rows(connect)
    assert _refresh(connect, tmp_path / "a").copied_rows == 0
    other = _refresh(connect, tmp_path / "b")
    assert not other.full and other.copied_rows == 8
    assert _mirror_rows(other) == _table_rows(connect)


def test_an_update_is_seen_by_every_mirror(connect: Callable, tmp_path: Path) -> None:
    _insert(connect, 0, 30)
    for name in ("a", "b"):
        _refresh(connect, tmp_path / name)
    with connect() as conn:
        conn.execute("UPDATE stats SET value = -1 WHERE customer_id = 2")
    _insert(connect, 30, 4)
    for name in ("a", "b"):
        mirrored = _refresh(connect, tmp_path / name)
        assert mirrored.full and "updated" in mirrored.why
        assert _mirror_rows(mirrored) == _table_rows(connect)
    _insert(connect, 34, 4)
    for name in ("a", "b"):
        mirrored = _refresh(connect, tmp_path / name)
        assert not mirrored.full and mirrored.copied_rows == 4
        assert _mirror_rows(mirrored) == _table_rows(connect)


def test_a_stale_mirror_stops_holding_the_log_and_copies_whole_when_back(
    connect: Callable, tmp_path: Path
) -> None:
    _insert(connect, 0, 10)
    _refresh(connect, tmp_path / "live")
    _refresh(connect, tmp_path / "stale")
    _insert(connect, 10, 5)
    _refresh(connect, tmp_path / "live")
    with connect() as conn:
        (held,) = conn.execute("SELECT count(*) FROM stats__mirror_delta").fetchone()
        assert held == 5, "the stale mirror has not read these rows yet"
        conn.execute(
            "UPDATE feature_platform_mirror_positions SET seen_at = now() - interval '8 days' "
            "WHERE mirror_id = %s",
            (
                json.loads((next((tmp_path / "stale").rglob("manifest.json"))).read_text())[
                    "mirror_id"
                ],
            ),
        )
    _insert(connect, 15, 5)
    live = _refresh(connect, tmp_path / "live")
    assert not live.full and live.copied_rows == 5
    with connect() as conn:
        (held,) = conn.execute("SELECT count(*) FROM stats__mirror_delta").fetchone()
    assert held == 0, "past the stale mirror's position"
    said: list[str] = []
    back = offline_mirror.refresh(connect, "stats", tmp_path / "stale", said.append)
    assert back.full and back.why == offline_mirror.EXPIRED
    assert "expired" in said[0]
    assert _mirror_rows(back) == _table_rows(connect)
    assert not _refresh(connect, tmp_path / "stale").full


def test_a_released_mirror_stops_holding_the_log_and_copies_whole_when_back(
    connect: Callable, tmp_path: Path
) -> None:
    """What a stopping offline server does for a mirror on its pod's own disk: only that
    directory's places are given up; the log is then pruned past them."""
    _insert(connect, 0, 10)
    _refresh(connect, tmp_path / "live")
    _refresh(connect, tmp_path / "gone")
    _insert(connect, 10, 5)
    _refresh(connect, tmp_path / "live")
    assert offline_mirror.release(connect, tmp_path / "gone") == ["public.stats"]
    assert offline_mirror.release(connect, tmp_path / "gone") == [], "given up once"
    _insert(connect, 15, 5)
    live = _refresh(connect, tmp_path / "live")
    assert not live.full and live.copied_rows == 5, "the other mirror keeps its place"
    with connect() as conn:
        (held,) = conn.execute("SELECT count(*) FROM stats__mirror_delta").fetchone()
    assert held == 0, "the log no longer held back for the released mirror"
    back = _refresh(connect, tmp_path / "gone")
    assert back.full and back.why == offline_mirror.EXPIRED
    assert _mirror_rows(back) == _table_rows(connect)


def test_releasing_a_mirror_never_refreshed_gives_up_nothing(
    connect: Callable, tmp_path: Path
) -> None:
    assert offline_mirror.release(connect, tmp_path / "empty") == []


def test_a_mirror_of_the_layout_before_positions_is_copied_whole_once(
    connect: Callable, tmp_path: Path
) -> None:
    """The claimed-batch layout: one mark per table, a mirror id per table, a batch
    column in the delta, manifests without a snapshot."""
    _insert(connect, 0, 10)
    mirrored = _refresh(connect, tmp_path)
    with connect() as conn:
        conn.execute("DROP TABLE feature_platform_mirror_marks, feature_platform_mirror_state")
        conn.execute(
            "CREATE TABLE feature_platform_mirror_marks (table_name text NOT NULL, "
            "marked_at timestamptz NOT NULL DEFAULT now())"
        )
        conn.execute(
            "CREATE TABLE feature_platform_mirror_state (table_name text PRIMARY KEY, "
            "table_oid oid NOT NULL, mirror_id text NOT NULL, generation bigint NOT NULL)"
        )
        conn.execute("ALTER TABLE stats__mirror_delta DROP COLUMN __mirror_xid")
        conn.execute("ALTER TABLE stats__mirror_delta ADD COLUMN __mirror_batch bigint")
    manifest_path = mirrored.parts[0].parent.parent / "manifest.json"
    old = json.loads(manifest_path.read_text())
    old = {k: v for k, v in old.items() if k not in ("snapshot", "copy", "last_delta")}
    manifest_path.write_text(json.dumps({**old, "last_batch": 0}))
    _insert(connect, 10, 3)  # the old delta refuses them: a mark instead
    upgraded = _refresh(connect, tmp_path)
    assert upgraded.full and upgraded.why == offline_mirror.OLD_LAYOUT
    assert _mirror_rows(upgraded) == _table_rows(connect)
    _insert(connect, 13, 3)
    after = _refresh(connect, tmp_path)
    assert not after.full and after.copied_rows == 3
    assert _mirror_rows(after) == _table_rows(connect)


def test_a_copy_replaced_whole_leaves_the_disk_at_the_next_refresh(
    connect: Callable, tmp_path: Path
) -> None:
    """Rows deleted from the table (an erasure) stay on disk only in the copy the
    previous manifest names, for its readers, until the next refresh."""
    _insert(connect, 0, 30)
    old = set(_refresh(connect, tmp_path).parts)
    with connect() as conn:
        conn.execute("DELETE FROM stats WHERE customer_id = 5")
    replaced = _refresh(connect, tmp_path)
    assert replaced.full and all(p.exists() for p in old)
    after = _refresh(connect, tmp_path)
    assert not after.full and after.copied_rows == 0
    assert not any(p.exists() for p in old)
    on_disk = pa.concat_tables(pq.read_table(p) for p in tmp_path.rglob("*.parquet"))
    assert 5 not in on_disk.column("customer_id").to_pylist()


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

    def write_first(conn: psycopg.Connection, *args: Any) -> tuple[int, list[str], str]:
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
