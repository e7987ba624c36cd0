"""A DuckDB condition that holds for every row that may break a view's expectations: the
rows it leaves out meet them, so a batch with no such row needs no row-by-row judging.

Judging a batch (`expectations.judge`: the rows as a pandas frame through pandera) costs
about a second per million rows; a training set judges every staged row, the steady
state included, though breaking rows are rare. The condition is wider than the rules
(every null and every NaN or infinite value is a suspect, whatever the share of nulls
allowed), so a batch that holds a suspect is judged in full, as before: the verdict is
always pandera's. Where a column's type leaves a rule's meaning in doubt (a string column
with a `min`, a boolean, a decimal), there is no condition, and the batch is judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
FLOATS = frozenset({"FLOAT", "DOUBLE"})
STRINGS = frozenset({"VARCHAR"})


def condition(
    features: Mapping[str, Mapping[str, Any]], columns: Mapping[str, tuple[str, str]]
) -> str | None:
    """OR of each feature's suspects: `columns` maps a feature to its SQL expression and
    DuckDB type; None when some rule cannot be put as a condition."""
    parts = []
    for feature, rule in features.items():
        expression, kind = columns[feature]
        part = _suspects(rule, expression, kind)
        if part is None:
            return None
        parts.append(part)
    return " OR ".join(f"({p})" for p in parts) if parts else "false"


def _suspects(rule: Mapping[str, Any], c: str, kind: str) -> str | None:
    integer, floating, string = kind in INTEGERS, kind in FLOATS, kind in STRINGS
    if not (integer or floating or string):
        return None
    out = [f"{c} IS NULL"]
    if floating:
        out.append(f"NOT isfinite({c})")  # NaN is null to pandas; inf is never integral
    wanted = rule.get("type")
    if wanted is not None:
        if (wanted == "string") != string:
            return None
        if wanted == "int" and floating:
            out.append(f"{c} <> trunc({c})")
    bounds = [(key, op) for key, op in (("min", "<"), ("max", ">")) if key in rule]
    if bounds and string:
        return None
    for key, op in bounds:
        bound = _number(rule[key])
        if bound is None:
            return None
        out.append(f"{c} {op} {bound}")
    if "allowed" in rule:
        values = list(rule["allowed"])
        literal = _string if string else _number
        if not values or any(literal(v) is None for v in values):
            return None
        out.append(f"{c} NOT IN ({', '.join(str(literal(v)) for v in values)})")
    return " OR ".join(out)


def _number(value: Any) -> str | None:
    """A finite number as a SQL literal; None for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float):
        # parsed from its shortest text: the same double as Python's, not a decimal's
        return f"CAST('{value!r}' AS DOUBLE)" if math.isfinite(value) else None
    return str(value)


def _string(value: Any) -> str | None:
    return "'" + value.replace("'", "''") + "'" if isinstance(value, str) else None
