"""The suspects condition against pandera's verdict: a batch with no suspect row breaks no
rule, on DuckDB columns as the training engine stages them (and hands to pandera)."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_platform.quality import suspects
from feature_platform.quality.expectations import Expectations

VALUES: dict[str, tuple[pa.DataType, list[Any]]] = {
    "int": (pa.int64(), [-2, -1, 0, 1, 2, 3, None]),
    "float": (
        pa.float64(),
        [-1.5, -1.0, 0.0, 0.1, 0.5, 1.0, 2.0, 1e300, math.nan, math.inf, -math.inf, None],
    ),
    "string": (pa.string(), ["a", "b", "", "o'k", None]),
}
NUMBERS = [-1, 0, 1, 0.1, 0.5, 2.0]


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {}
    if draw(st.booleans()):
        rule["type"] = draw(st.sampled_from(["int", "float", "string"]))
    if draw(st.booleans()):
        rule["nulls"] = draw(st.sampled_from([0, 0.1, 0.5]))
    for bound in ("min", "max"):
        if draw(st.booleans()):
            rule[bound] = draw(st.sampled_from(NUMBERS))
    if draw(st.booleans()):
        pool = draw(st.sampled_from([NUMBERS, ["a", "b", "o'k"]]))
        rule["allowed"] = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
    return rule


def staged(kind: str, values: list[Any]) -> tuple[duckdb.DuckDBPyConnection, str]:
    con = duckdb.connect()
    arrow = pa.table({"__f0": pa.array(values, type=VALUES[kind][0])})  # noqa: F841 (DuckDB)
    con.execute("CREATE TABLE staged AS SELECT * FROM arrow")
    (column_type,) = [row[1] for row in con.execute("DESCRIBE staged").fetchall()]
    return con, column_type


@settings(max_examples=400, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(VALUES)), rule=rules())
def test_a_batch_without_suspects_breaks_no_rule(
    data: st.DataObject, kind: str, rule: dict[str, Any]
) -> None:
    # a subset of the kind's values (each special value in about half the batches), some
    # of them repeated past the size from which a share of nulls is judged
    pool = VALUES[kind][1]
    chosen = sorted(data.draw(st.sets(st.sampled_from(range(len(pool))), min_size=1)))
    values = [pool[i] for i in chosen] * data.draw(st.sampled_from([1, 2, 8]))
    con, column_type = staged(kind, values)
    where = suspects.condition({"f": rule}, {"f": ("__f0", column_type)})
    if where is None:
        return  # judged in full: nothing to compare
    (n_suspects,) = con.execute(f"SELECT count(*) FROM staged WHERE {where}").fetchone()  # type: ignore[misc]
    rows = con.execute("SELECT __f0 AS f FROM staged").df()
    broken = Expectations("v", "quarantine", {"f": rule}).violations(rows)
    if n_suspects == 0:
        assert broken == [], (values, rule, where)


def test_a_breaking_row_is_a_suspect() -> None:
    """The condition finds what it is for (the property above holds for `false` too)."""
    for kind, values, rule in [
        ("int", [1, 5], {"max": 3}),
        ("float", [0.5, -0.1], {"min": 0}),
        ("float", [1.0, 1.5], {"type": "int"}),
        ("string", ["a", "c"], {"allowed": ["a", "b"]}),
        ("int", [1, None], {}),
        ("float", [1.0, math.nan], {"nulls": 0.5}),
    ]:
        con, column_type = staged(kind, values)
        where = suspects.condition({"f": rule}, {"f": ("__f0", column_type)})
        assert where is not None, rule
        (n,) = con.execute(f"SELECT count(*) FROM staged WHERE {where}").fetchone()  # type: ignore[misc]
        assert n == 1, (kind, values, rule, where)


def test_rules_a_column_type_leaves_in_doubt_have_no_condition() -> None:
    for rule, column_type in [
        ({"min": 1}, "VARCHAR"),
        ({"type": "string"}, "BIGINT"),
        ({"type": "int"}, "VARCHAR"),
        ({"allowed": ["a"]}, "BIGINT"),
        ({}, "BOOLEAN"),
        ({}, "DECIMAL(10,2)"),
        ({"min": math.inf}, "DOUBLE"),
    ]:
        assert suspects.condition({"f": rule}, {"f": ("c", column_type)}) is None, rule
