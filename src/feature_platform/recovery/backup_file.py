"""The registry backup file: the tables of a registry database as one snapshot held them,
portable across PostgreSQL versions, with a format version and a checksum.

gzip over lines of text:

    feature-platform registry backup                      the magic line
    {"version": 1, "environment": "dev", ...}             the header (JSON)
    {"table": "entities", "columns": [...], ...}          a table's definition (JSON)
    <its rows, one line each, in PostgreSQL's COPY text format: UTF-8, ISO dates in UTC>
    \\.                                                    the end of its rows
    ... one such section per table ...
    {"end": true, "rows": {"entities": 3, ...}, "sha256": "..."}

The sha256 covers every byte before the last line, so a truncated, cut or altered file is
refused before anything is restored. COPY's text format reads the same into every server
version, and a row's line is never `\\.` (COPY writes a backslash as `\\\\`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from feature_platform.errors import PlatformError

MAGIC = b"feature-platform registry backup\n"
VERSION = 1
END_OF_ROWS = b"\\.\n"


class BadBackup(PlatformError):
    """The file is not a complete registry backup this version reads (exit 2)."""


def _json_line(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode() + b"\n"


class Writer:
    """Writes a backup to a hidden file beside `path`, renamed to `path` only once it is
    complete: a killed run never leaves a file that looks like a backup."""

    def __init__(self, path: Path, header: Mapping[str, Any]) -> None:
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        self._raw: BinaryIO = self.partial.open("wb")
        self._gzip = gzip.GzipFile(fileobj=self._raw, mode="wb", mtime=0)
        self._digest = hashlib.sha256()
        self._table: str | None = None
        self.rows: dict[str, int] = {}
        self._write(MAGIC)
        self._write(_json_line({**header, "version": VERSION}))

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        self._digest.update(data)
        self._gzip.write(data)

    def table(self, definition: Mapping[str, Any]) -> None:
        assert self._table is None, "the previous table's rows are not ended"
        self._table = str(definition["table"])
        self.rows[self._table] = 0
        self._write(_json_line(definition))

    def row(self, line: bytes | bytearray | memoryview) -> None:
        """One row as COPY ... TO STDOUT gives it: its line, newline included."""
        assert self._table is not None
        self._write(line)
        self.rows[self._table] += 1

    def end_table(self) -> None:
        self._write(END_OF_ROWS)
        self._table = None

    def finish(self) -> str:
        """Write the checksum, sync and rename into place; the sha256."""
        sha256 = self._digest.hexdigest()
        self._gzip.write(_json_line({"end": True, "rows": self.rows, "sha256": sha256}))
        self._gzip.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        self.partial.replace(self.path)
        return sha256

    def discard(self) -> None:
        self._gzip.close()
        self._raw.close()
        self.partial.unlink(missing_ok=True)


def _object(line: bytes, what: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise BadBackup(f"{name}: {what} is not a JSON object: the file is damaged")
    return value


def records(path: Path) -> Iterator[tuple[str, Any]]:
    """The file as ("header", dict), then per table ("table", definition), ("row", line)
    for each row and ("end_table", name), and last ("end", trailer); BadBackup as soon
    as the file proves damaged, and at the end unless every byte matches the checksum."""
    name = path.name
    digest = hashlib.sha256()
    counted: dict[str, int] = {}
    trailer: dict[str, Any] | None = None
    try:
        with gzip.open(path, "rb") as stream:
            first = stream.readline()
            if first != MAGIC:
                raise BadBackup(
                    f"{name} is not a registry backup (it does not start with "
                    f"{MAGIC.decode().strip()!r})"
                )
            header_line = stream.readline()
            header = _object(header_line, "the header", name)
            if header.get("version") != VERSION:
                raise BadBackup(
                    f"{name} is a backup of format version {header.get('version')!r}; this "
                    f"version of the platform reads version {VERSION}"
                )
            digest.update(first + header_line)
            yield "header", header
            table: str | None = None
            for line in stream:
                if not line.endswith(b"\n"):
                    break
                if table is not None:
                    digest.update(line)
                    if line == END_OF_ROWS:
                        yield "end_table", table
                        table = None
                    else:
                        counted[table] += 1
                        yield "row", line
                    continue
                record = _object(line, "a section", name)
                if record.get("end") is True:
                    trailer = record
                    break
                digest.update(line)
                table = record.get("table")
                if not isinstance(table, str) or table in counted:
                    raise BadBackup(f"{name}: a table section without a new table name")
                counted[table] = 0
                yield "table", record
            extra = stream.read(1)
    except (OSError, EOFError, zlib.error) as exc:
        # gzip's own checks: a cut file ends early, a changed byte fails its CRC.
        raise BadBackup(f"{name} cannot be read: {type(exc).__name__}: {exc}") from None
    if trailer is None:
        raise BadBackup(f"{name} ends before its checksum: the file is truncated")
    if extra:
        raise BadBackup(f"{name} goes on after its checksum: the file is damaged")
    if trailer.get("sha256") != digest.hexdigest():
        raise BadBackup(f"{name} does not match its checksum: the file is damaged")
    if trailer.get("rows") != counted:
        raise BadBackup(f"{name}: the row counts do not match the rows: the file is damaged")
    yield "end", trailer


@dataclass
class Summary:
    header: dict[str, Any]
    tables: list[dict[str, Any]]
    rows: dict[str, int]
    sha256: str

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def verify(path: Path) -> Summary:
    """Read the whole file: what it holds, or BadBackup."""
    header: dict[str, Any] = {}
    tables: list[dict[str, Any]] = []
    trailer: dict[str, Any] = {}
    for kind, value in records(path):
        if kind == "header":
            header = value
        elif kind == "table":
            tables.append(value)
        elif kind == "end":
            trailer = value
    return Summary(header, tables, dict(trailer["rows"]), str(trailer["sha256"]))
