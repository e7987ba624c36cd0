"""The fast engine's ASOF form of the training rule against the rule itself, written out
literally, over generated rows: no services, many examples.

The rule for a label at t: among an entity's rows with event <= t and creation <= t (a
NULL creation time counting as the event time), the newest by event then creation time;
null when there is none or it is older than t - ttl (boundary inclusive)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_platform.training.engine import Plan, Stage, ViewJoin

TTL_US = 5_000_000
VIEW = ViewJoin(
    name="v",
    source=None,
    label_keys=["k"],
    source_keys=["k"],
    features=["x"],
    timestamp="event_timestamp",
    created="created_timestamp",
    ttl_us=TTL_US,
)

# (entity, event s, creation lag s or None, value); small ranges so ties and boundaries hit.
_rows = st.lists(
    st.tuples(
        st.integers(1, 3), st.integers(0, 12), st.one_of(st.none(), st.integers(0, 4)),
        st.integers(0, 99),
    ),
    max_size=25,
)  # fmt: skip
_labels = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 20)), min_size=1, max_size=25)


def expected(rows: list[tuple[int, int, int | None, int]], key: int, t: int) -> int | None:
    usable = [
        (event, event + (lag or 0), value)
        for k, event, lag, value in rows
        if k == key and event <= t and event + (lag or 0) <= t
    ]
    if not usable:
        return None
    event, _, value = max(usable, key=lambda r: (r[0], r[1]))
    return value if event * 1_000_000 >= t * 1_000_000 - TTL_US else None


def _unique(rows: list[tuple[int, int, int | None, int]]) -> list[tuple[int, int, int | None, int]]:
    """One row per (entity, event, creation): an exact tie has no defined winner."""
    seen: dict[tuple[int, int, int], tuple[int, int, int | None, int]] = {}
    for row in rows:
        seen.setdefault((row[0], row[1], row[1] + (row[2] or 0)), row)
    return list(seen.values())


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("engine")


@settings(max_examples=40, deadline=None)
@given(rows=_rows, labels=_labels)
def test_asof_join_applies_the_training_rule(work: Path, rows: list, labels: list) -> None:
    rows = _unique(rows)
    label_batch = pa.RecordBatch.from_pydict(
        {
            "k": pa.array([k for k, _ in labels], pa.int64()),
            "event_timestamp": pa.array(
                [t * 1_000_000 for _, t in labels], pa.timestamp("us", "UTC")
            ),
        }
    )
    stage_dir = work / f"s{id(rows)}_{len(labels)}"
    stage_dir.mkdir()
    stage = Stage(stage_dir, threads=1)
    try:
        stage.add_labels(iter([label_batch]), Plan([VIEW], [], []), lambda _m: None)
        stage.con.register(
            "source_rows",
            pa.table(
                {
                    "__k0": pa.array([r[0] for r in rows], pa.int64()),
                    "__event": pa.array([r[1] * 1_000_000 for r in rows], pa.int64()),
                    "__created": pa.array(
                        [(r[1] + (r[2] or 0)) * 1_000_000 for r in rows], pa.int64()
                    ),
                    "__f0": pa.array([r[3] for r in rows], pa.int64()),
                }
            ),
        )
        stage.con.execute("CREATE TABLE rows_0 AS SELECT * FROM source_rows")
        stage.reduce_to_winners(0, VIEW)
        joined = stage.join(Plan([VIEW], [], []), 0, len(labels))
    finally:
        stage.close()
    assert joined.column("k").to_pylist() == [k for k, _ in labels], "label order kept"
    assert joined.column("x").to_pylist() == [expected(rows, k, t) for k, t in labels]
