"""`feature-platform registry-backup` and `registry-restore` against a real registry.

One small stack: generated data, applied and materialized by the platform's commands (so
the apply log and the watermarks hold rows), then backed up. After the backup a late row
is written (created now, event time before the last run's end) and the registry database
is dropped, created again by a restarted server (Feast writes its project id into the new
database) and restored. The restored registry plans as no change, a server on it answers
what the server answered before, the platform's tables are back, and the next
materialize loads the late row.

The customer_stats watermark is moved an hour ahead before the backup, as a job whose
clock runs ahead of the database's leaves it: without the restore lowering it to the
snapshot time, the late row (created before that watermark, event time before the last
run's end) would never be loaded.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from stacks import Stack, _drop_databases, patched_environ

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.errors import EXIT_BAD_INPUT, EXIT_FAILED
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rows as view_rows
from feature_platform.materialization.watermarks import TABLE as WATERMARKS
from feature_platform.materialization.watermarks import Watermarks
from feature_platform.offline import tables as offline_tables
from feature_platform.recovery.backup_file import MAGIC
from feature_platform.recovery.registry_backup import RESTORE_TABLE
from feature_platform.training import FEATURE_SERVICE

# The local PostgreSQL trusts every connection and ignores it; it must still never show.
SECRET = "pg-Secret-never-shown-4d1a"
SIZES = generator.Sizes(customers=12, merchants=3, days=3, transactions=40)
CUSTOMERS = list(range(1, 9))
LATE_VALUE = 4242.0


@dataclass
class Run:
    code: int
    out: str
    err: str


@dataclass
class Restored:
    stack: Stack
    backup: Path
    snapshot_at: datetime
    late_customer: int
    before: dict[str, Any]  # the server's answer before the backup
    after: dict[str, Any]  # a server on the restored registry, before materializing
    server: FeatureServer | None
    restore: Run
    plan: Run
    runs: list[Run] = field(default_factory=list)
    # pg_dump of the registry database just before the backup and just after the restore
    dumps: list[str] = field(default_factory=list)

    def cli(self, *args: str) -> Run:
        """`feature-platform ARGS` in this process, its output captured."""
        out, err = io.StringIO(), io.StringIO()
        with self.stack.active(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(list(args))
        run = Run(code, out.getvalue(), err.getvalue())
        self.runs.append(run)
        return run

    def dump(self) -> str:
        """pg_dump of the registry database, but for the watermarks' rows (the restore
        lowers one) and the restore's own record; the random key of \\restrict aside."""
        settings = self.stack.settings()
        conninfo = offline_tables.postgres_conninfo(settings, settings["REGISTRY_DB"])
        done = subprocess.run(
            ["pg_dump", "--no-owner", f"--exclude-table-data={WATERMARKS.name}",
             f"--exclude-table={RESTORE_TABLE}*", f"--dbname={conninfo}"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return "\n".join(
            line
            for line in done.stdout.splitlines()
            if not line.startswith(("\\restrict", "\\unrestrict"))
        )

    def registry(self, query: str) -> list[tuple[Any, ...]]:
        settings = self.stack.settings()
        conninfo = offline_tables.postgres_conninfo(settings, settings["REGISTRY_DB"])
        with psycopg.connect(conninfo) as conn:
            return conn.execute(query).fetchall()


def _entities() -> dict[str, list[Any]]:
    return {
        "customer_id": CUSTOMERS,
        "merchant_id": [1] * len(CUSTOMERS),
        "amount": [25.0] * len(CUSTOMERS),
    }


def _answer(server: FeatureServer) -> dict[str, Any]:
    return server.online_features(_entities(), feature_service=FEATURE_SERVICE)


def _late_row(stack: Stack, customer: int, as_of: datetime) -> None:
    """A snapshot of `customer` at the data's newest event time, created now: its event
    time is before the last run's end, so only a read by creation time finds it."""
    settings = stack.settings()
    stats = offline_tables.read(settings, "customer_stats")
    late = (
        stats[stats["customer_id"] == customer]
        .iloc[-1:]
        .assign(
            event_timestamp=pd.Timestamp(as_of),
            created_timestamp=pd.Timestamp(datetime.now(UTC)),
            avg_purchase_30d=LATE_VALUE,
        )
    )
    offline_tables.write(settings, {"customer_stats": pd.concat([stats, late])})


def _ok(run: Run) -> Run:
    assert run.code == 0, run.err[-3000:]
    return run


@pytest.fixture(scope="module")
def restored(stack_factory: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restored]:
    stack = stack_factory(
        "dev", "backup", {"POSTGRES_PASSWORD": SECRET, materialize.OVERLAP_VAR: "0"}
    )
    as_of = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    tables = generator.generate(SIZES, seed=5, as_of=as_of)
    stack.write(tables)
    # New customers have no snapshot yet: the late row is another one of a known customer.
    late_customer = min(set(tables["customer_stats"]["customer_id"]) & set(CUSTOMERS))
    state = Restored(stack, Path(), as_of, late_customer, {}, {}, None, Run(0, "", ""),
                     Run(0, "", ""))  # fmt: skip
    _ok(state.cli("apply", "dev"))
    _ok(state.cli("materialize", "dev"))
    with stack.active(), view_rows.job_store("dev") as store:
        Watermarks(store.registry, store.project).advance(
            "customer_stats", datetime.now(UTC) + timedelta(hours=1)
        )
    server = stack.server()
    state.before = _answer(server)
    server.stop()

    backups = tmp_path_factory.mktemp("backups")
    state.dumps.append(state.dump())
    taken = _ok(state.cli("registry-backup", "dev", "--output", str(backups)))
    state.backup = Path(taken.out.strip())
    header = json.loads(gzip.decompress(state.backup.read_bytes()).split(b"\n")[1])
    state.snapshot_at = datetime.fromisoformat(header["snapshot_at"])

    _late_row(stack, late_customer, as_of)
    settings = stack.settings()
    _drop_databases(settings, [settings["REGISTRY_DB"]])
    # A restarted server: its init container creates the database, Feast its tables.
    offline_tables.ensure_databases(settings, lambda _line: None, names=("REGISTRY_DB",))
    with stack.active(), view_rows.job_store("dev"):
        pass
    state.restore = _ok(state.cli("registry-restore", "dev", "--input", str(state.backup)))
    state.dumps.append(state.dump())
    state.plan = _ok(state.cli("plan", "dev"))
    state.server = stack.server()
    state.after = _answer(state.server)
    yield state


def test_the_backup_is_one_file_with_a_version_and_a_checksum(restored: Restored) -> None:
    with gzip.open(restored.backup) as stream:
        lines = stream.read().split(b"\n")
    assert lines[0] + b"\n" == MAGIC
    header = json.loads(lines[1])
    assert header["version"] == 1 and header["environment"] == "dev"
    trailer = json.loads(lines[-2])
    assert trailer["end"] is True and len(trailer["sha256"]) == 64
    # Feast's registry and the platform's tables, in one snapshot.
    assert trailer["rows"]["feature_views"] == 3
    assert trailer["rows"]["platform_apply_log"] == 1
    assert trailer["rows"]["platform_materialization_watermark"] == 3
    assert restored.backup.name.startswith("registry-dev-")


def test_the_restored_database_is_the_one_backed_up(restored: Restored) -> None:
    """pg_dump, another program's reading of both: every table's definition, sequence,
    constraint, index, comment and row (the watermarks' rows are checked below)."""
    before, after = restored.dumps
    assert "CREATE TABLE public.platform_apply_log" in before
    assert "COPY public.feature_views" in before
    assert after == before


def test_the_restored_registry_plans_no_change(restored: Restored) -> None:
    assert "no changes" in restored.plan.out
    assert "0 safe and 0 breaking" in restored.plan.err


def test_a_server_on_the_restored_registry_answers_as_before(restored: Restored) -> None:
    assert restored.after == restored.before
    assert restored.after["results"], "the server answered no feature"


def test_the_platforms_tables_are_restored(restored: Restored) -> None:
    log = json.loads(_ok(restored.cli("rollout-log", "dev")).out)
    assert [(entry["id"], entry["outcome"]) for entry in log] == [(1, "applied")]
    (record,) = restored.registry(f"SELECT watermarks_lowered, replaced FROM {RESTORE_TABLE}")
    assert record == (["customer_stats"], False)
    # The apply log's id sequence goes on after the restored rows.
    assert restored.registry("SELECT nextval('platform_apply_log_id_seq')") == [(2,)]


def test_watermarks_are_never_later_than_the_snapshot(restored: Restored) -> None:
    marks = dict(
        restored.registry(
            "SELECT feature_view, created_until FROM platform_materialization_watermark"
        )
    )
    assert set(marks) == {"customer_stats", "customer_txn_1h", "merchant_stats"}
    assert marks["customer_stats"] == restored.snapshot_at
    assert all(mark <= restored.snapshot_at for mark in marks.values())
    assert "watermark of customer_stats lowered from" in restored.restore.err


def test_rows_created_after_the_backup_are_loaded_by_the_next_materialize(
    restored: Restored,
) -> None:
    def avg(answer: dict[str, Any]) -> list[Any]:
        names = answer["metadata"]["feature_names"]
        return answer["results"][names.index("avg_purchase_30d")]["values"]

    late = CUSTOMERS.index(restored.late_customer)
    assert avg(restored.after)[late] != LATE_VALUE
    _ok(restored.cli("materialize", "dev"))
    assert restored.server is not None
    now = avg(_answer(restored.server))
    assert now[late] == LATE_VALUE
    assert now[:late] + now[late + 1 :] == (
        avg(restored.before)[:late] + avg(restored.before)[late + 1 :]
    )


def _one_line_failure(run: Run, code: int) -> str:
    assert run.code == code, run.err[-2000:]
    lines = run.err.strip().splitlines()
    assert lines[-1].startswith("registry-restore failed: "), lines
    failures = [line for line in lines if "failed" in line]
    assert len(failures) == 1, lines
    return lines[-1]


def test_a_database_that_holds_a_registry_is_not_restored_over(restored: Restored) -> None:
    applies = restored.registry("SELECT count(*) FROM platform_apply_log")
    line = _one_line_failure(
        restored.cli("registry-restore", "dev", "--input", str(restored.backup)), EXIT_BAD_INPUT
    )
    assert "is not empty" in line and "--replace" in line
    assert restored.registry(f"SELECT count(*) FROM {RESTORE_TABLE}") == [(1,)]
    # With --replace it is: the tables as the backup holds them, and this restore.
    _ok(restored.cli("registry-restore", "dev", "--input", str(restored.backup), "--replace"))
    assert restored.registry(f"SELECT replaced FROM {RESTORE_TABLE}") == [(True,)]
    assert restored.registry("SELECT count(*) FROM platform_apply_log") == applies


def _changed_byte(data: bytes) -> bytes:
    """`data` with one byte of its compressed middle changed so that it no longer reads as
    the same text (some changes of a Huffman table decode to the same text)."""
    text = gzip.decompress(data)
    for at in range(len(data) // 2, len(data)):
        changed = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
        try:
            if gzip.decompress(changed) != text:
                return changed
        except (OSError, EOFError, zlib.error):
            return changed
    raise AssertionError("no byte changes the text")


def _damaged(backup: Path, tmp: Path) -> dict[str, Path]:
    data = backup.read_bytes()
    text = gzip.decompress(data)
    row = text.index(b"\nfraud_detection\t") + 1
    files = {
        "truncated": data[: len(data) // 2],
        "a changed byte": _changed_byte(data),
        "a changed row": gzip.compress(text[:row] + b"X" + text[row + 1 :]),
        "no checksum": gzip.compress(text[: text.rindex(b'{"end"')]),
        "not a backup": gzip.compress(b"feature-platform was here\n"),
        "not gzip": b"SELECT 1;\n",
    }
    paths = {}
    for name, content in files.items():
        path = tmp / f"{name.replace(' ', '-')}.backup.gz"
        path.write_bytes(content)
        paths[name] = path
    paths["missing"] = tmp / "missing.backup.gz"
    return paths


def test_a_damaged_backup_is_refused_and_changes_nothing(
    restored: Restored, tmp_path: Path
) -> None:
    restores = restored.registry(f"SELECT count(*) FROM {RESTORE_TABLE}")
    for name, path in _damaged(restored.backup, tmp_path).items():
        # --replace: only the file's check stands between it and the registry.
        run = restored.cli("registry-restore", "dev", "--input", str(path), "--replace")
        line = _one_line_failure(run, EXIT_BAD_INPUT)
        assert path.name in line, (name, line)
    assert restored.registry(f"SELECT count(*) FROM {RESTORE_TABLE}") == restores
    assert "no changes" in _ok(restored.cli("plan", "dev")).out


def test_an_unreachable_database_is_one_line(restored: Restored) -> None:
    with patched_environ({"POSTGRES_PORT": "1"}):
        run = restored.cli("registry-restore", "dev", "--input", str(restored.backup))
    _one_line_failure(run, EXIT_FAILED)


def test_no_secret_in_any_output(restored: Restored) -> None:
    outputs = [restored.restore, restored.plan, *restored.runs]
    assert len(outputs) >= 8
    for run in outputs:
        assert SECRET not in run.out and SECRET not in run.err
    assert SECRET.encode() not in gzip.decompress(restored.backup.read_bytes())
