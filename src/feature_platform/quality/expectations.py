"""A view's expectations, read from its tags (`feature_repo/expectations.py` writes
them), as a pandera schema, and the rows that break them.

Per feature: `type` (int, float or string), `nulls` (the share of nulls a batch of
MIN_ROWS_FOR_SHARE rows or more may hold; 0 by default: never null), `min` and `max`, or
`allowed` values, and `drift`: thresholds for the drift tests that override the defaults.
Per view a policy, `refuse` or
`quarantine`. A view without the tags has no expectations. A feature service's labels:
per label column the `share` of positive rows ([least, most]) a training set's labels
must hold, judged on MIN_LABELS_FOR_SHARE labels or more.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property, lru_cache
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from feature_platform.errors import PlatformError

POLICY_TAG = "quality.policy"
EXPECTATIONS_TAG = "quality.expectations"
REFUSE = "refuse"
QUARANTINE = "quarantine"
POLICIES = (REFUSE, QUARANTINE)
_KEYS = {"type", "nulls", "min", "max", "allowed", "drift"}
# The drift tests (`quality/drift.py`) and their default thresholds; a feature's `drift`
# rule overrides some of them.
DRIFT_DEFAULTS = {"psi": 0.2, "js": 0.1, "ks": 0.01, "chi2": 0.01, "nulls": 0.05}
# A share of nulls is judged on batches of at least this many rows: in fewer, one null is
# a large share by chance (a single pushed row, three merchants).
MIN_ROWS_FOR_SHARE = 20
LABELS_TAG = "quality.labels"
# A label's share is judged on at least this many labels: a fraud share of 2% holds 20
# positives in 1,000 labels, in fewer the share is mostly chance.
MIN_LABELS_FOR_SHARE = 1_000


class ExpectationError(PlatformError):
    """A view's expectation tags that cannot be read."""


class Refused(PlatformError):
    """Rows broke the rules of a view whose policy is `refuse`: nothing is written."""

    def __init__(self, refusal: str) -> None:
        super().__init__(f"expectations not met: {refusal}")


@dataclass(frozen=True)
class Violation:
    """One broken rule: `row` is the batch's row position, None for the whole batch."""

    feature: str
    rule: str
    row: int | None
    value: Any


@dataclass(frozen=True)
class Expectations:
    view: str
    policy: str
    features: Mapping[str, Mapping[str, Any]]

    @cached_property
    def schema(self) -> pa.DataFrameSchema:
        return pa.DataFrameSchema(
            {name: _column(name, spec) for name, spec in self.features.items()},
            strict=False,
        )

    def violations(self, rows: pd.DataFrame) -> list[Violation]:
        """Every rule `rows` break, in row order; rows are judged by position."""
        if not rows.index.equals(pd.RangeIndex(len(rows))):
            rows = rows.reset_index(drop=True)  # a copy: only when needed
        try:
            self.schema.validate(rows, lazy=True)
        except SchemaErrors as exc:
            found = _violations(exc.failure_cases)
        else:
            return []
        # The value as the batch holds it: pandera's failure cases widen integers to floats.
        return [
            replace(v, value=_scalar(rows.at[v.row, v.feature]))
            if v.row is not None and v.feature in rows
            else v
            for v in found
        ]


@dataclass
class Verdict:
    """What a batch's rows meet: the broken rules of views that refuse, and the rows that
    views under quarantine set aside (row position -> the rules it broke, as text)."""

    refused: list[tuple[str, Violation]] = field(default_factory=list)
    set_aside: dict[int, dict[str, list[str]]] = field(default_factory=dict)

    def refusal(self, rows: pd.DataFrame, keys: Sequence[str] = (), limit: int = 5) -> str:
        """The refused rules, for a person: view, feature, rule, value and the row, by
        its `keys` (a table's join keys) or else its position in `rows`."""
        said = []
        for view, v in self.refused[:limit]:
            where = ""
            if v.row is not None:
                names = [key for key in keys if key in rows]
                at = ", ".join(f"{k}={_scalar(rows[k].iloc[v.row])}" for k in names)
                where = f" at {at or f'row {v.row}'} (value {v.value!r})"
            said.append(f"{view}.{v.feature} breaks '{v.rule}'{where}")
        more = len(self.refused) - limit
        return "; ".join(said) + (f"; and {more} more" if more > 0 else "")


def judge(expectations: Sequence[Expectations], rows: pd.DataFrame) -> Verdict:
    """`rows` against each view's expectations, under each view's policy. A rule broken
    by the batch as a whole (a missing column) sets every row aside."""
    verdict = Verdict()
    for expected in expectations:
        for violation in expected.violations(rows):
            if expected.policy == REFUSE:
                verdict.refused.append((expected.view, violation))
                continue
            positions = range(len(rows)) if violation.row is None else [violation.row]
            for position in positions:
                rules = verdict.set_aside.setdefault(position, {}).setdefault(expected.view, [])
                rules.append(f"{violation.feature}: {violation.rule}")
    return verdict


@lru_cache(maxsize=256)
def _parsed(view: str, policy: str | None, features: str) -> Expectations | None:
    tags = {EXPECTATIONS_TAG: features} | ({POLICY_TAG: policy} if policy is not None else {})
    return from_tags(view, tags)


def of_view(view: str, tags: Mapping[str, str]) -> Expectations | None:
    """`from_tags`, kept per view and tags: a write reads them every time."""
    if EXPECTATIONS_TAG not in tags:
        return None
    return _parsed(view, tags.get(POLICY_TAG), tags[EXPECTATIONS_TAG])


def from_tags(view: str, tags: Mapping[str, str]) -> Expectations | None:
    """`view`'s expectations from its tags; None without any."""
    if EXPECTATIONS_TAG not in tags:
        return None
    policy = tags.get(POLICY_TAG, REFUSE)
    if policy not in POLICIES:
        raise ExpectationError(f"{view}: {POLICY_TAG} must be one of {', '.join(POLICIES)}")
    try:
        features = json.loads(tags[EXPECTATIONS_TAG])
    except ValueError:
        raise ExpectationError(f"{view}: {EXPECTATIONS_TAG} is not JSON") from None
    if not isinstance(features, dict):
        raise ExpectationError(f"{view}: {EXPECTATIONS_TAG} must map features to rules")
    for name, spec in features.items():
        unknown = set(spec) - _KEYS if isinstance(spec, dict) else {"(not an object)"}
        if unknown:
            raise ExpectationError(f"{view}.{name}: unknown rules {', '.join(sorted(unknown))}")
        if spec.get("type", "float") not in _TYPES:
            raise ExpectationError(f"{view}.{name}: type must be one of {', '.join(_TYPES)}")
        drift = spec.get("drift", {})
        if not isinstance(drift, dict) or not all(
            test in DRIFT_DEFAULTS and isinstance(limit, int | float)
            for test, limit in drift.items()
        ):
            raise ExpectationError(
                f"{view}.{name}: drift must map tests ({', '.join(DRIFT_DEFAULTS)}) to thresholds"
            )
    return Expectations(view, policy, features)


def _integral(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values):
        return pd.Series(False, index=values.index)
    if pd.api.types.is_integer_dtype(values):
        return pd.Series(True, index=values.index)
    if pd.api.types.is_float_dtype(values):
        return values % 1 == 0
    return values.map(lambda v: isinstance(v, int) and not isinstance(v, bool))


def _numeric(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return pd.Series(True, index=values.index)
    return values.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool))


def _string(values: pd.Series) -> pd.Series:
    if pd.api.types.infer_dtype(values, skipna=True) in ("string", "empty"):
        return pd.Series(True, index=values.index)  # every value a str: one pass in C
    return values.map(lambda v: isinstance(v, str))


_TYPES: dict[str, Callable[[pd.Series], pd.Series]] = {
    "int": _integral,
    "float": _numeric,
    "string": _string,
}


def _column(name: str, spec: Mapping[str, Any]) -> pa.Column:
    checks = []
    if "type" in spec:
        checks.append(pa.Check(_TYPES[spec["type"]], name=f"type {spec['type']}"))
    if "min" in spec:
        checks.append(pa.Check.ge(spec["min"], error=f"min {spec['min']}"))
    if "max" in spec:
        checks.append(pa.Check.le(spec["max"], error=f"max {spec['max']}"))
    if "allowed" in spec:
        allowed = list(spec["allowed"])
        checks.append(pa.Check.isin(allowed, error=f"one of {', '.join(map(str, allowed))}"))
    share = float(spec.get("nulls", 0))
    if share > 0:
        checks.append(pa.Check(_null_share(share), ignore_na=False, name=f"nulls <= {share:g}"))
    return pa.Column(name=name, checks=checks, nullable=share > 0, required=True)


def _null_share(share: float) -> Callable[[pd.Series], pd.Series]:
    """Over `share` nulls in a batch of MIN_ROWS_FOR_SHARE rows or more, its null rows
    break the rule; else none does."""

    def check(values: pd.Series) -> pd.Series:
        if len(values) >= MIN_ROWS_FOR_SHARE and values.isna().mean() > share:
            return values.notna()
        return pd.Series(True, index=values.index)

    return check


def _violations(cases: pd.DataFrame) -> list[Violation]:
    found = []
    for case in cases.to_dict("records"):
        check = str(case["check"])
        rule = {"not_nullable": "not null", "column_in_dataframe": "present"}.get(check, check)
        row = None if pd.isna(case["index"]) else int(case["index"])
        feature = str(case["column"]) if case["column"] is not None else str(case["failure_case"])
        found.append(Violation(feature, rule, row, _scalar(case["failure_case"])))
    return sorted(found, key=lambda v: (-1 if v.row is None else v.row, v.feature))


def _scalar(value: Any) -> Any:
    """A plain Python value; None for any null."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def label_shares(tags: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """A feature service's expected label shares (its `quality.labels` tag): per label
    column the least and most share of positive rows; empty without the tag."""
    if LABELS_TAG not in tags:
        return {}
    try:
        expected = json.loads(tags[LABELS_TAG])
        return {name: (float(spec["share"][0]), float(spec["share"][1]))
                for name, spec in expected.items()}  # fmt: skip
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        raise ExpectationError(
            f"{LABELS_TAG} must map labels to {{'share': [least, most]}}"
        ) from None


def label_violations(shares: Mapping[str, tuple[float, float]], labels: pd.DataFrame) -> list[str]:
    """The label shares in `labels` outside `shares` (`label_shares`), one line each;
    none for a label column the labels do not hold, or under MIN_LABELS_FOR_SHARE labels."""
    if not shares or len(labels) < MIN_LABELS_FOR_SHARE:
        return []
    schema = pa.DataFrameSchema(
        {
            name: pa.Column(
                checks=pa.Check(
                    lambda values, lo=lo, hi=hi: lo <= values.astype(float).mean() <= hi,
                    error=f"share of positives {lo:g} to {hi:g}",
                ),
                required=False,
                nullable=True,
            )
            for name, (lo, hi) in shares.items()
        }
    )
    try:
        schema.validate(labels, lazy=True)
    except SchemaErrors as exc:
        broken = {str(case["column"]) for case in exc.failure_cases.to_dict("records")}
        return [
            f"label {name}: share of positives {labels[name].astype(float).mean():.4g}, "
            f"expected {shares[name][0]:g} to {shares[name][1]:g}"
            for name in sorted(broken)
        ]
    return []
