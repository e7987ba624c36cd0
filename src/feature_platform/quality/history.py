"""What quality keeps over time, beside the quarantine (`quality/database.py`):

- `platform_training_sets`: each training set the `training-set` command wrote, by name,
  with its labels (file or query), its features, its time, its file and a sample of its
  rows (features and labels, without entity keys or times): a reference a model can point
  to, and `feature-platform quality --training-set NAME` compares with wherever it runs,
  the file being on the training job's volume;
- `platform_feature_statistics`: per quality run and feature, both sides' statistics
  (rows, nulls; mean, deviation and percentiles, or distinct values and the commonest),
  each test's score and threshold, and the verdict.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from feature_platform.quality.database import Target, decoded

if TYPE_CHECKING:
    # monitor imports the drift tests (scipy): most of a second the training-set command,
    # which records its sets here, does not spend
    from feature_platform.quality.monitor import Run

TRAINING_SETS = "platform_training_sets"
STATISTICS = "platform_feature_statistics"

_COLUMNS = {
    TRAINING_SETS: {"id": "id", "created_at": "time", "environment": "text", "name": "text",
                    "features": "text", "labels": "text", "output": "text", "rows": "int",
                    "sample": "blob"},
    STATISTICS: {"id": "id", "run_at": "time", "environment": "text", "reference": "text",
                 "current": "text", "view": "text", "feature": "text", "kind": "text",
                 "reference_stats": "json", "current_stats": "json", "scores": "json",
                 "drifted": "bool"},
}  # fmt: skip


@dataclass(frozen=True)
class TrainingSet:
    created_at: datetime
    environment: str
    name: str
    features: str  # the feature service, or the references, comma-separated
    labels: str  # the labels' file or query
    output: str
    rows: int


def _insert(table: str) -> str:
    names = [name for name in _COLUMNS[table] if name != "id"]
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"


SAMPLE_ROWS = 100_000


def sample_of(output: Path, leave_out: Collection[str], rows: int = SAMPLE_ROWS) -> bytes:
    """A uniform sample of at most `rows` rows of a training set, as parquet: its
    columns but `leave_out` (entity keys) and times, the values drift compares."""
    schema = pq.read_schema(output)
    kept = [f.name for f in schema if f.name not in leave_out and not pa.types.is_temporal(f.type)]
    table = pq.read_table(output, columns=kept)
    if table.num_rows > rows:
        chosen = np.random.default_rng(0).choice(table.num_rows, rows, replace=False)
        table = table.take(np.sort(chosen))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def record_training_set(target: Target, written: TrainingSet, sample: bytes) -> None:
    row = {**asdict(written), "created_at": written.created_at.isoformat(), "sample": sample}
    with target.cursor() as cursor:
        cursor.execute(target.create(TRAINING_SETS, _COLUMNS[TRAINING_SETS]))
        cursor.execute(
            _insert(TRAINING_SETS), [row[c] for c in _COLUMNS[TRAINING_SETS] if c != "id"]
        )


def training_sets(target: Target, name: str | None = None, limit: int = 20) -> list[TrainingSet]:
    """The recorded training sets, newest first; of one name, or all."""
    return [found for found, _ in _training_sets(target, name, limit, with_sample=False)]


def training_set_sample(target: Target, name: str) -> tuple[TrainingSet, pd.DataFrame] | None:
    """The newest training set recorded as `name`, with its sample of rows."""
    for found, sample in _training_sets(target, name, 1, with_sample=True):
        return found, pd.read_parquet(pa.BufferReader(bytes(sample)))
    return None


def _training_sets(
    target: Target, name: str | None, limit: int, with_sample: bool
) -> list[tuple[TrainingSet, Any]]:
    where, params = ("WHERE name = %s", [name]) if name else ("", [])
    names = [c for c in _COLUMNS[TRAINING_SETS] if c not in ("id", "sample")]
    selected = [*names, "sample" if with_sample else "NULL"]
    with target.cursor() as cursor:
        cursor.execute(target.create(TRAINING_SETS, _COLUMNS[TRAINING_SETS]))
        found = cursor.execute(
            f"SELECT {', '.join(selected)} FROM {TRAINING_SETS} {where} "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            [*params, limit],
        ).fetchall()
    sets = []
    for row in found:
        values = dict(zip(names, row[:-1], strict=True))
        at = values["created_at"]
        values["created_at"] = datetime.fromisoformat(at) if isinstance(at, str) else at
        sets.append((TrainingSet(**values), row[-1]))
    return sets


def record_run(target: Target, environment: str, run: Run, at: datetime) -> int:
    """Every compared feature of `run`, one row each; the number of rows."""
    sqlite = target.sqlite is not None
    rows = []
    for compared in run.compared:
        result = compared.result
        rows.append([
            at.isoformat(), environment, run.reference, run.current, compared.view,
            result.feature, result.kind, json.dumps(result.reference_stats),
            json.dumps(result.current_stats), json.dumps(result.scores_by_test()),
            int(result.drifted) if sqlite else result.drifted,
        ])  # fmt: skip
    with target.cursor() as cursor:
        cursor.execute(target.create(STATISTICS, _COLUMNS[STATISTICS]))
        cursor.executemany(_insert(STATISTICS), rows)
    return len(rows)


def latest_statistics(target: Target, environment: str) -> list[dict[str, Any]]:
    """The last run's rows of `environment`, as plain data."""
    names = [c for c in _COLUMNS[STATISTICS] if c != "id"]
    with target.cursor() as cursor:
        cursor.execute(target.create(STATISTICS, _COLUMNS[STATISTICS]))
        found = cursor.execute(
            f"SELECT {', '.join(names)} FROM {STATISTICS} WHERE environment = %s AND run_at = "
            f"(SELECT max(run_at) FROM {STATISTICS} WHERE environment = %s) ORDER BY id",
            [environment, environment],
        ).fetchall()
    out = decoded(names, found, ("reference_stats", "current_stats", "scores"))
    for values in out:
        values["drifted"] = bool(values["drifted"])
    return out
