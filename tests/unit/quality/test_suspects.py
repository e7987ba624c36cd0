"""The suspects condition against pandera's verdict: a batch with no suspect row breaks no
rule, on DuckDB columns as the training engine stages them (and hands to pandera)."""

from __future__ import annotations

import math
from typing import Any

import duckdb
import pyarrow as pa
import pytest
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
    """Rules of one to a few parts: each part alone is what may slip through."""
    rule: dict[str, Any] = {}
    sometimes = st.sampled_from([True, False, False])
    if draw(sometimes):
        rule["type"] = draw(st.sampled_from(["int", "float", "string"]))
    if draw(sometimes):
        rule["nulls"] = draw(st.sampled_from([0, 0.1, 0.5]))
    for bound in ("min", "max"):
        if draw(sometimes):
            rule[bound] = draw(st.sampled_from(NUMBERS))
    if draw(sometimes):
        pool = draw(st.sampled_from([NUMBERS, ["a", "b", "o'k"]]))
        rule["allowed"] = draw(st.lists(st.sampled_from(pool), min_size=1, unique=True))
    return rule


def staged(kind: str, values: list[Any]) -> tuple[duckdb.DuckDBPyConnection, str]:
    con = duckdb.connect()
    arrow = pa.table({"__f0": pa.array(values, type=VALUES[kind][0])})  # noqa: F841 (DuckDB)
    con.execute("CREATE TABLE staged AS SELECT * FROM arrow")
    (column_type,) = [row[1] for row in con.execute("DESCRIBE staged").fetchall()]
    return con, column_type


@settings(max_examples=600, deadline=None)
@given(data=st.data(), kind=st.sampled_from(sorted(VALUES)), rule=rules())
def test_a_batch_without_suspects_breaks_no_rule(
    data: st.DataObject, kind: str, rule: dict[str, Any]
) -> None:
    # a subset of the kind's values (each special value in about half the batches), some
    # of them repeated past the size from which a share of nulls is judged
    pool = VALUES[kind][1]
    chosen = sorted(data.draw(st.sets(st.sampled_from(range(len(pool))), min_size=1)))
    values = [pool[i] for i in chosen] * data.draw(st.sampled_from([1, 2, 8]))
    clean_if_judged_clean(kind, values, rule)


@pytest.mark.parametrize(
    ("kind", "values", "rule"),
    [
        ("float", [1.0, math.inf], {"type": "int"}),
        ("float", [1.0, -math.inf], {"min": -1}),
        ("int", [1, 2, 3, None] * 8, {"nulls": 0.1}),
        ("float", [1.0, 2.0, 3.0, math.nan] * 8, {"nulls": 0.1}),
        ("string", ["a", "b", "", None] * 8, {"nulls": 0.2}),
    ],
)
def test_the_cases_that_slip_through_a_narrower_search(
    kind: str, values: list[Any], rule: dict[str, Any]
) -> None:
    assert Expectations("v", "quarantine", {"f": rule}).violations(
        staged(kind, values)[0].execute("SELECT __f0 AS f FROM staged").df()
    )
    clean_if_judged_clean(kind, values, rule)


def clean_if_judged_clean(kind: str, values: list[Any], rule: dict[str, Any]) -> None:
    con, column_type = staged(kind, values)
    clean = suspects.all_clean(con, "staged", {"f": rule}, {"f": ("__f0", column_type)})
    rows = con.execute("SELECT __f0 AS f FROM staged").df()
    broken = Expectations("v", "quarantine", {"f": rule}).violations(rows)
    if clean:
        assert broken == [], (values, rule)


def test_a_breaking_row_is_a_suspect_and_a_clean_batch_is_clean() -> None:
    """The search finds what it is for (the property above holds for "never clean" too)."""
    share = suspects.MIN_ROWS_FOR_SHARE
    for kind, values, rule in [
        ("int", [1, 5], {"max": 3}),
        ("float", [0.5, -0.1], {"min": 0}),
        ("float", [1.0, 1.5], {"type": "int"}),
        ("string", ["a", "c"], {"allowed": ["a", "b"]}),
        ("int", [1, None], {}),
        ("float", [1.0, math.nan], {}),
        ("float", [1.0, math.nan] * share, {"nulls": 0.2}),
    ]:
        con, column_type = staged(kind, values)
        columns = {"f": ("__f0", column_type)}
        assert not suspects.all_clean(con, "staged", {"f": rule}, columns), (kind, values, rule)
        ok = [v for v in values if v not in (5, -0.1, 1.5, "c", None) and v == v]
        con, column_type = staged(kind, ok + ([None] if rule.get("nulls") else []))
        columns = {"f": ("__f0", column_type)}
        assert suspects.all_clean(con, "staged", {"f": rule}, columns), (kind, ok, rule)


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
