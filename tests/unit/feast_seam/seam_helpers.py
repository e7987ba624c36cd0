"""What the seam tests share: real Feast objects for a local store, and a signature check."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def assert_params(func: Callable[..., Any], names: str, by_keyword: bool = False) -> None:
    """`func` takes `names` (comma-separated) the way the platform calls it: first and in
    that order, or anywhere when it passes them `by_keyword`; any other parameter has a
    default."""
    wanted = [n.strip() for n in names.split(",")]
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if by_keyword:
        missing = set(wanted) - {p.name for p in params}
        assert not missing, f"{func.__qualname__}{signature}: no {sorted(missing)}"
    else:
        got = [p.name for p in params[: len(wanted)]]
        assert got == wanted, f"{func.__qualname__}{signature}: expected {wanted} first"
    required = [
        p.name
        for p in params
        if p.name not in wanted
        and p.default is p.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    assert not required, f"{func.__qualname__}{signature} now requires {required}"


def declared_on_class(cls: type, attribute: str) -> bool:
    """An instance attribute: assigned to `self.<attribute>` or annotated in a class body."""
    assigned = re.compile(rf"self\.{attribute}\s*(:[^=\n]*)?=[^=]|^\s+{attribute}\s*:", re.M)
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] != "feast":
            continue
        if assigned.search(inspect.getsource(klass)):
            return True
    return False


# --- a real local store: SQL registry in SQLite, the platform's SQLite and duckdb stores --

NOW = datetime.now(UTC).replace(microsecond=0)
TTL = timedelta(hours=2)


def feature_objects(repo: Path) -> dict[str, Any]:
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.on_demand_feature_view import on_demand_feature_view
    from feast.types import Int64

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    counts = FeatureView(
        name="counts",
        entities=[customer],
        ttl=TTL,
        schema=[Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)],
        source=FileSource(
            path=str(repo / "counts.parquet"),
            timestamp_field="event_timestamp",
            created_timestamp_column="created",
        ),
    )

    @on_demand_feature_view(sources=[counts], schema=[Field(name="n2", dtype=Int64)], mode="python")
    def doubled(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"n2": [n * 2 for n in inputs["n"]]}

    service = FeatureService(name="svc", features=[counts])
    return {"customer": customer, "counts": counts, "doubled": doubled, "svc": service}


def write_counts(repo: Path) -> None:
    import pandas as pd

    pd.DataFrame(
        {
            "customer_id": [1, 2],
            "n": [7, 8],
            "event_timestamp": [NOW - timedelta(hours=1)] * 2,
            "created": [NOW] * 2,
        }
    ).to_parquet(repo / "counts.parquet")


def repo_config(repo: Path, **registry: Any) -> Any:
    from feast.repo_config import RepoConfig

    return RepoConfig(
        project="seam",
        provider="local",
        repo_path=str(repo),
        registry={"registry_type": "sql", "path": f"sqlite:///{repo}/registry.db", **registry},
        online_store={
            "type": "feature_platform.stores.sqlite_online.SqliteOnlineStore",
            "path": str(repo / "online.db"),
        },
        offline_store={"type": "feature_platform.stores.duckdb_offline.DuckDBOfflineStore"},
        entity_key_serialization_version=3,
    )


async def asgi_get(app: Any, path: str, query: str = "") -> tuple[int, bytes]:
    """GET `path` from an ASGI app in this process: (status, body)."""
    status, body = 0, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [],
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    return status, body
