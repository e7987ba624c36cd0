"""Feature values from the feature server and from training sets, made comparable.

A feature's declared Feast type decides its Python type on both sides: the server's JSON
must already carry it, and a training-set value must convert to it without loss (pandas
turns an Int64 column with a null into floats; 4.0 is accepted as 4, 4.5 is not).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.types import Float32, Float64, Int32, Int64, String

from feature_platform.server import response_rows
from feature_platform.training import FEATURE_SERVICE

PYTHON_TYPE = {Int64: int, Int32: int, Float64: float, Float32: float, String: str}


def feature_types(store: FeatureStore) -> dict[str, Any]:
    """Feature name -> Feast type, for every feature of the service."""
    service = store.get_feature_service(FEATURE_SERVICE)
    return {f.name: f.dtype for p in service.feature_view_projections for f in p.features}


def _offline_value(value: Any, dtype: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    kind = PYTHON_TYPE[dtype]
    if kind is int:
        as_float = float(value)
        assert as_float.is_integer(), f"non-integral {value!r} for an integer feature"
        return int(as_float)
    return kind(value)


def offline_rows(df: pd.DataFrame, types: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {name: _offline_value(row[name], dtype) for name, dtype in types.items()}
        for row in df.to_dict("records")
    ]


def online_rows(response: dict[str, Any], types: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{name: row[name] for name in types} for row in response_rows(response)]
    for row in rows:
        for name, value in row.items():
            expected = PYTHON_TYPE[types[name]]
            assert value is None or type(value) is expected, (
                f"{name}={value!r} served as {type(value).__name__}, declared {expected.__name__}"
            )
    return rows


def materialized_at(store: FeatureStore) -> pd.Timestamp:
    """The instant whose training rows match a first materialize-incremental exactly.

    That run loads each view from (the wall-clock time it ran - ttl), not from
    (its end - ttl), so a training set at the end time can see rows near the ttl
    boundary that never went online. At the run time itself both windows agree.
    """
    return max(
        pd.Timestamp(view.materialization_intervals[0][0]) + view.ttl
        for view in store.list_feature_views()
    )
