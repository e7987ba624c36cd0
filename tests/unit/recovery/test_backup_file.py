"""The registry backup file without a database: what is written reads back the same, and a
file that lost or changed anything is refused before a restore could use it
(tests/integration/recovery/test_registry_backup.py runs backups and restores for real)."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from feature_platform.recovery.backup_file import BadBackup, Writer, records, verify

ROWS = {
    "entities": [
        b"customer\tfraud_detection\t1\t\\\\x0a0b\n",
        b"merchant\tfraud_detection\t1\t\\N\n",
    ],
    "empty": [],
    # A value that is a backslash and a dot, as COPY writes it: never the end of the rows.
    "odd": [b"\\\\.\n"],
}


def _write(path: Path) -> str:
    writer = Writer(path, {"environment": "dev", "snapshot_at": "2026-12-06T10:00:00+00:00"})
    for table, rows in ROWS.items():
        writer.table({"table": table, "columns": []})
        for row in rows:
            writer.row(row)
        writer.end_table()
    return writer.finish()


def test_what_is_written_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "registry-dev-20261206T100000Z.backup.gz"
    sha256 = _write(path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no partial file is left"
    events = list(records(path))
    assert events[0] == ("header", {"environment": "dev", "snapshot_at":
                                    "2026-12-06T10:00:00+00:00", "version": 1})  # fmt: skip
    rows: dict[str, list[bytes]] = {}
    table = ""
    for kind, value in events[1:-1]:
        if kind == "table":
            table = value["table"]
            rows[table] = []
        elif kind == "row":
            rows[table].append(value)
    assert rows == ROWS
    summary = verify(path)
    assert summary.sha256 == sha256
    assert summary.rows == {"entities": 2, "empty": 0, "odd": 1}


def test_a_discarded_backup_leaves_nothing(tmp_path: Path) -> None:
    writer = Writer(tmp_path / "b.backup.gz", {"environment": "dev"})
    writer.table({"table": "entities", "columns": []})
    writer.discard()
    assert list(tmp_path.iterdir()) == []


def _text(tmp_path: Path) -> bytes:
    """A whole backup's uncompressed text."""
    path = tmp_path / "whole.backup.gz"
    _write(path)
    return gzip.decompress(path.read_bytes())


def _refused(tmp_path: Path, text: bytes) -> BadBackup:
    path = tmp_path / "damaged.backup.gz"
    path.write_bytes(gzip.compress(text))
    with pytest.raises(BadBackup, match=r"damaged\.backup\.gz") as refused:
        verify(path)
    return refused.value


def test_a_file_cut_at_any_line_is_refused(tmp_path: Path) -> None:
    lines = _text(tmp_path).splitlines(keepends=True)
    for end in range(len(lines)):
        _refused(tmp_path, b"".join(lines[:end]))


def test_a_changed_line_is_refused(tmp_path: Path) -> None:
    changed = _text(tmp_path).replace(b"merchant\t", b"merchanT\t")
    assert "does not match its checksum" in str(_refused(tmp_path, changed))


def test_another_format_version_is_refused(tmp_path: Path) -> None:
    other = _text(tmp_path).replace(b'"version":1', b'"version":2')
    assert "format version 2" in str(_refused(tmp_path, other))
