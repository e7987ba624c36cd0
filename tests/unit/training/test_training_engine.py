"""The fast engine's ASOF form of the training rule against the rule itself, written out
literally, over generated rows: no services, many examples.

The rule for a label at t: among an entity's rows with event <= t and creation <= t (a
NULL creation time counting as the event time), the newest by event then creation time;
null when there is none or it is older than t - ttl (boundary inclusive)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.type_map import feast_value_type_to_pa
from feast.types import Float64, Int64, String
from feast.value_type import ValueType
from hypothesis import example, given, settings
from hypothesis import strategies as st

from feature_platform.training.engine import Plan, Stage, ViewJoin, on_demand
from feature_platform.training.labels import LabelError

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

# (entity, event s, creation lag s or None, value); small ranges so ties and boundaries hit;
# a negative lag: created before its event time, visible from the event time.
_rows = st.lists(
    st.tuples(
        st.integers(1, 3), st.integers(0, 12), st.one_of(st.none(), st.integers(-3, 4)),
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


def _us(seconds: int) -> int:
    return seconds * 1_000_000


def _label_batch(labels: list[tuple[int, int]]) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "k": pa.array([k for k, _ in labels], pa.int64()),
            "event_timestamp": pa.array([_us(t) for _, t in labels], pa.timestamp("us", "UTC")),
        }
    )


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
    label_batch = _label_batch(labels)
    stage_dir = Path(tempfile.mkdtemp(dir=work))
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


# -- the parquet path: staging, per-entity pruning and the winners, end to end --------

PARQUET_VIEW = replace(VIEW, name="p", source_keys=["entity"], label_keys=["k"])

_parquet_rows = st.lists(
    st.tuples(
        st.integers(1, 3), st.integers(0, 30), st.one_of(st.none(), st.integers(-3, 6)),
        st.one_of(st.none(), st.integers(0, 99)),
    ),
    max_size=30,
)  # fmt: skip


@settings(max_examples=40, deadline=None)
@given(rows=_parquet_rows, labels=_labels)
@example(  # a late row (visible after a newer one) never wins; created NULL is the event
    rows=[(1, 3, None, 1), (1, 2, 4, 2), (1, 3, 2, 3), (1, 9, 0, None)],
    labels=[(1, 2), (1, 3), (1, 5), (1, 6), (1, 9), (1, 14), (1, 15)],
)
@example(  # peers in visibility time: the newest of them, else the earlier winner
    rows=[(2, 4, 1, 1), (2, 5, 0, 2), (2, 1, 4, 3), (2, 0, 0, 4), (2, 5, -2, 5)],
    labels=[(2, 0), (2, 4), (2, 5), (2, 20)],
)
@example(  # boundaries: visible at the entity's last label, event one ttl before its first
    rows=[(1, 5, None, 7), (2, 0, None, 8), (2, 9, 3, 9)],
    labels=[(1, 5), (2, 5), (2, 12)],
)
def test_parquet_rows_give_the_training_rule(work: Path, rows: list, labels: list) -> None:
    """Rows read from a parquet file (NULL creation times, NULL values, entities without
    labels and labels without rows), staged and pruned per entity as `add_view` does."""
    rows = _unique(rows)
    stage_dir = Path(tempfile.mkdtemp(dir=work))
    path = stage_dir / "rows.parquet"
    pq.write_table(
        pa.table(
            {
                "entity": pa.array([r[0] for r in rows], pa.int64()),
                "event_timestamp": pa.array([_us(r[1]) for r in rows], pa.timestamp("us", "UTC")),
                "created_timestamp": pa.array(
                    [None if r[2] is None else _us(r[1] + r[2]) for r in rows],
                    pa.timestamp("us", "UTC"),
                ),
                "x": pa.array([r[3] for r in rows], pa.int64()),
            }
        ),
        path,
    )
    view = replace(
        PARQUET_VIEW, source=FileSource(path=str(path), timestamp_field="event_timestamp")
    )
    plan = Plan([view], [], [])
    stage = Stage(stage_dir, threads=1)
    try:
        stage.add_labels(iter([_label_batch(labels)]), plan, lambda _m: None)
        stage.add_view(0, view, [str(path)], lambda _m: None)
        joined = pa.concat_tables(stage.chunks(plan, 4))
    finally:
        stage.close()
    assert joined.column("k").to_pylist() == [k for k, _ in labels], "label order kept"
    assert joined.column("x").to_pylist() == [expected(rows, k, t) for k, t in labels]


# -- chunks ------------------------------------------------------------------------


def _staged(work: Path, name: str, n: int) -> Stage:
    stage_dir = work / name
    stage_dir.mkdir()
    stage = Stage(stage_dir, threads=1)
    labels = [(i % 3 + 1, i % 20) for i in range(n)]
    stage.add_labels(iter([_label_batch(labels)]), Plan([VIEW], [], []), lambda _m: None)
    stage.con.execute(
        "CREATE TABLE rows_0 AS SELECT (i % 3 + 1)::BIGINT AS __k0, (i * 1000000)::BIGINT "
        "AS __event, (i * 1000000)::BIGINT AS __created, i::BIGINT AS __f0 FROM range(20) t(i)"
    )
    stage.reduce_to_winners(0, VIEW)
    return stage


@pytest.mark.parametrize("size", [1, 7, 50, 1000])
def test_chunks_are_the_join_in_label_order(work: Path, size: int) -> None:
    stage = _staged(work, f"chunks{size}", 50)
    try:
        plan = Plan([VIEW], [], [])
        chunks = list(stage.chunks(plan, size))
        whole = stage.join(plan, 0, 50)
    finally:
        stage.close()
    assert [c.num_rows for c in chunks] == [min(size, 50 - a) for a in range(0, 50, size)]
    assert pa.concat_tables(chunks).equals(whole)
    assert whole.column("x").null_count < 50


def test_chunks_left_early_leave_the_stage_closable(work: Path) -> None:
    stage = _staged(work, "early", 50)
    chunks = stage.chunks(Plan([VIEW], [], []), 10)
    first = next(chunks)  # the second chunk is being read
    assert first.num_rows == 10
    stage.close()  # waits for that read
    chunks.close()


def test_labels_named_like_a_feature_are_refused(work: Path) -> None:
    stage_dir = work / "clash"
    stage_dir.mkdir()
    stage = Stage(stage_dir, threads=1)
    batch = _label_batch([(1, 0)]).append_column("x", pa.array([1], pa.int64()))
    try:
        with pytest.raises(LabelError, match=r"named like features: \['x'\]"):
            stage.add_labels(iter([batch]), Plan([VIEW], [], []), lambda _m: None)
    finally:
        stage.close()


# -- on-demand transformations: the same columns as Feast's transform_arrow ----------

_entity = Entity(name="k", join_keys=["k"], value_type=ValueType.INT64)
_stats = FeatureView(
    name="stats",
    entities=[_entity],
    schema=[Field(name="k", dtype=Int64), Field(name="avg", dtype=Float64)],
    source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
)
_request = RequestSource(name="req", schema=[Field(name="amount", dtype=Float64)])


@on_demand_feature_view(
    sources=[_stats, _request],
    schema=[Field(name="ratio", dtype=Float64), Field(name="unused", dtype=Float64)],
    mode="python",
)
def ratio_view(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    ratios = [
        None if a is None or v is None or v != v or v == 0 else round(a / v, 6)
        for a, v in zip(inputs["amount"], inputs["avg"], strict=True)
    ]
    return {"ratio": ratios, "unused": [1.0] * len(ratios)}


@on_demand_feature_view(
    sources=[_stats, _request],
    schema=[Field(name="hour", dtype=Int64), Field(name="keyed", dtype=String)],
    mode="python",
)
def timed_view(inputs: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Reads the label time, the keys and full names; returns a `view__feature` name."""
    return {
        "timed_view__hour": [t.hour if t.minute % 2 else None for t in inputs["event_timestamp"]],
        "keyed": [f"{k}:{v}" for k, v in zip(inputs["k"], inputs["stats__avg"], strict=True)],
        "stats__avg": inputs["stats__avg"],  # an input alias Feast drops
    }


@on_demand_feature_view(
    sources=[_stats, _request], schema=[Field(name="doubled", dtype=Float64)], mode="pandas"
)
def pandas_view(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"doubled": frame["amount"] * 2})


def _feast_on_demand(plan: Plan, table: pa.Table) -> pa.Table:
    """The transformations as Feast applies them, on the same input columns."""
    names = {"k", "event_timestamp", "amount", "avg"}
    for odfv, requested in plan.odfvs:
        declared = {f.name: feast_value_type_to_pa(f.dtype.to_value_type()) for f in odfv.features}
        given = table.select([n for n in table.column_names if n in names])
        out = odfv.transform_arrow(given, full_feature_names=False)
        for name in out.column_names:
            if name in requested:
                table = table.append_column(name, out[name].cast(declared[name]))
    return table


@pytest.mark.parametrize("avg", [[1.5, None, float("nan"), 0.0, 3.0, -2.0], [None] * 6])
def test_on_demand_equals_feasts_transform_arrow(avg: list[float | None]) -> None:
    view = replace(VIEW, features=["avg"])
    plan = Plan(
        [view],
        [(ratio_view, {"ratio"}), (timed_view, {"hour", "keyed"}), (pandas_view, {"doubled"})],
        ["amount"],
    )
    table = pa.table(
        {
            "k": pa.array([1, 2, 3, 1, 2, 3], pa.int64()),
            "event_timestamp": pa.array(
                [_us(60 * m + 3600 * m) for m in range(6)], pa.timestamp("us", "UTC")
            ),
            "amount": pa.array([3.0, 1.0, None, 2.0, 6.0, 4.0], pa.float64()),
            "label": pa.array(["a", "b", "c", "d", "e", "f"]),
            "avg": pa.array(avg, pa.float64()),
        }
    )
    ours, feasts = on_demand(plan, table), _feast_on_demand(plan, table)
    assert ours.schema == feasts.schema
    for name in ours.column_names:  # as Python values: NaN equals NaN, not None
        assert list(map(repr, ours[name].to_pylist())) == list(map(repr, feasts[name].to_pylist()))
    assert ours.column_names[-4:] == ["ratio", "hour", "keyed", "doubled"]
    assert ours.schema.field("ratio").type == pa.float64()
