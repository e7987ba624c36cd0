"""What a client sends the feature server, and its answer read back as rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def online_request(
    entities: Mapping[str, Sequence[Any]],
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"entities": {k: list(v) for k, v in entities.items()}}
    if feature_service:
        body["feature_service"] = feature_service
    else:
        body["features"] = list(features or [])
    return body


def response_rows(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The feature server's column-wise answer as one dict per entity row."""
    names = response["metadata"]["feature_names"]
    columns = response["results"]
    n_rows = len(columns[0]["values"]) if columns else 0
    return [
        {name: col["values"][i] for name, col in zip(names, columns, strict=True)}
        for i in range(n_rows)
    ]
