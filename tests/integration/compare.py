"""Feature values from the feature server and from training sets, made comparable.

The comparison itself is the package's (`feature_platform.checks.comparison`, which the skew
check uses too); these helpers also fail a test on any value of the wrong type.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from feast import FeatureStore

from feature_platform.checks import comparison
from feature_platform.checks.comparison import feature_types

__all__ = ["feature_types", "materialized_at", "offline_rows", "online_rows", "served_values"]


def served_values(server: Any, feature: str, customers: list[int]) -> list[Any]:
    """`feature` (`view:name`) as `server` serves it for each customer; None: not found."""
    answer = server.online_features({"customer_id": customers}, features=[feature])
    column = answer["results"][1]
    return [
        value if status == "PRESENT" else None
        for value, status in zip(column["values"], column["statuses"], strict=True)
    ]


def _typed(rows: list[comparison.Row], types: dict[str, Any], side: str) -> list[comparison.Row]:
    wrong = [
        f"{name}: {problem}"
        for row in rows
        for name, value in row.items()
        if (problem := comparison.type_problem(value, types[name]))
    ]
    assert wrong == [], f"{side} values of the wrong type: {wrong[:10]}"
    return rows


def offline_rows(df: pd.DataFrame, types: dict[str, Any]) -> list[dict[str, Any]]:
    return _typed(comparison.offline_rows(df, types), types, "training")


def online_rows(response: dict[str, Any], types: dict[str, Any]) -> list[dict[str, Any]]:
    return _typed(comparison.online_rows(response, types), types, "served")


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
