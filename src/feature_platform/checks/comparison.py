"""Served feature vectors and training rows, compared value for value and type for type.

A feature's declared Feast type decides its Python type on both sides: the server's JSON
must already carry it, and a training-set value must convert to it without loss (pandas
turns an Int64 column with a null into floats; 4.0 is accepted as 4, 4.5 is not). The
skew check and the tests compare through this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from feast import FeatureStore
from feast.types import Bool, Float32, Float64, Int32, Int64, String

from feature_platform.serving.client import response_rows
from feature_platform.training import FEATURE_SERVICE

PYTHON_TYPE = {Int64: int, Int32: int, Float64: float, Float32: float, String: str, Bool: bool}

Row = dict[str, Any]


@dataclass(frozen=True)
class Mismatch:
    """One feature of one row whose served value is not its training value."""

    row: int
    feature: str
    online: Any
    offline: Any
    problem: str


def feature_types(store: FeatureStore, service: str = FEATURE_SERVICE) -> dict[str, Any]:
    """Feature name -> Feast type, for every feature of the service."""
    projections = store.get_feature_service(service).feature_view_projections
    return {f.name: f.dtype for p in projections for f in p.features}


def comparable(types: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The features this module can compare (scalars), and the names of the others."""
    scalar = {name: dtype for name, dtype in types.items() if dtype in PYTHON_TYPE}
    return scalar, [name for name in types if name not in scalar]


def _is_null(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and bool(np.isnan(value))


def offline_value(value: Any, dtype: Any) -> Any:
    """A training-set value as its declared type; left as it is when it does not convert
    without loss, so that `type_problem` names it."""
    if _is_null(value):
        return None
    kind = PYTHON_TYPE[dtype]
    is_bool = isinstance(value, bool | np.bool_)
    if kind is bool:
        return bool(value) if is_bool else value
    if is_bool:
        return value
    if kind is int:
        if isinstance(value, int | np.integer):
            return int(value)
        if isinstance(value, float | np.floating) and float(value).is_integer():
            return int(value)
        return value
    if kind is float:
        return float(value) if isinstance(value, int | float | np.number) else value
    return str(value) if isinstance(value, str) else value


def type_problem(value: Any, dtype: Any) -> str | None:
    """Why `value` is not of the feature's declared type, or None (null fits any type)."""
    expected = PYTHON_TYPE[dtype]
    if value is None or type(value) is expected:
        return None
    return f"{type(value).__name__} {value!r}, declared {dtype}"


def offline_rows(df: pd.DataFrame, types: Mapping[str, Any]) -> list[Row]:
    return [
        {name: offline_value(row[name], dtype) for name, dtype in types.items()}
        for row in df.to_dict("records")
    ]


def online_rows(response: Mapping[str, Any], types: Mapping[str, Any]) -> list[Row]:
    """The server's values as it sent them; a feature it did not send raises KeyError."""
    return [{name: row[name] for name in types} for row in response_rows(response)]


def mismatches(
    online: Sequence[Row], offline: Sequence[Row], types: Mapping[str, Any]
) -> list[Mismatch]:
    """Every (row, feature) whose served value differs from the training value in type
    or in value, rows in order."""
    if len(online) != len(offline):
        raise ValueError(f"{len(online)} served rows against {len(offline)} training rows")
    found = []
    for i, (served, trained) in enumerate(zip(online, offline, strict=True)):
        for name, dtype in types.items():
            s, t = served[name], trained[name]
            problem = None
            if (wrong := type_problem(s, dtype)) is not None:
                problem = f"served {wrong}"
            elif (wrong := type_problem(t, dtype)) is not None:
                problem = f"training holds {wrong}"
            elif s != t:
                problem = "values differ"
            if problem:
                found.append(Mismatch(i, name, s, t, problem))
    return found
