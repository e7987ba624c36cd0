"""A DuckDB condition that holds for every row that may break a view's expectations: the
rows it leaves out meet them, so a batch with no such row needs no row-by-row judging.

Judging a batch (`expectations.judge`: the rows as a pandas frame through pandera) costs
about a second per million rows; a training set judges every staged row, the steady
state included, though breaking rows are rare. The condition is wider than the rules
(every infinite value is a suspect, and every null where none may be; where a share of
nulls may be, the batch's share is compared with it as pandera does), so a batch that
holds a suspect is judged in full, as before: the verdict is always pandera's. Where a
column's type leaves a rule's meaning in doubt (a string column with a `min`, a boolean,
a decimal), there is no condition, and the batch is judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from feature_platform.quality.expectations import MIN_ROWS_FOR_SHARE

INTEGERS = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT"}
    | {"UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
)
FLOATS = frozenset({"FLOAT", "DOUBLE"})
STRINGS = frozenset({"VARCHAR"})


def all_clean(
    con: Any,
    table: str,
    features: Mapping[str, Mapping[str, Any]],
    columns: Mapping[str, tuple[str, str]],
) -> bool:
    """No row of DuckDB's `table` (on `con`) may break a rule, and no share of nulls is
    broken: judged row by row, the batch would meet `features`' expectations. `columns`
    as `condition` takes them."""
    where = condition(features, columns)
    if where is None:
        return False
    shares = null_shares(features)
    counts = [
        "count(*)",
        f"count(*) FILTER (WHERE {where})",
        *(f"count(*) FILTER (WHERE {nulls(*columns[f])})" for f in shares),
    ]
    rows, suspect, *null_rows = con.execute(f"SELECT {', '.join(counts)} FROM {table}").fetchone()
    return not suspect and not any(
        share_broken(rows, n, share) for n, share in zip(null_rows, shares.values(), strict=True)
    )


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
    # a null where none may be; where some may, their share is the batch's (`share_broken`)
    out = [] if float(rule.get("nulls", 0)) > 0 else [nulls(c, kind)]
    if floating:
        out.append(f"isinf({c})")  # never integral, and past any bound
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
    return " OR ".join(out) or "false"


def nulls(c: str, kind: str) -> str:
    """What pandas counts as a null: NULL, and NaN in a float column."""
    return f"{c} IS NULL OR isnan({c})" if kind in FLOATS else f"{c} IS NULL"


def null_shares(features: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The features whose nulls are judged as a share of the batch, with that share."""
    shares = {name: float(rule.get("nulls", 0)) for name, rule in features.items()}
    return {name: share for name, share in shares.items() if share > 0}


def share_broken(rows: int, null_rows: int, share: float) -> bool:
    """The batch's nulls break their rule (as `expectations` judges a share)."""
    return rows >= MIN_ROWS_FOR_SHARE and null_rows / rows > share


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
