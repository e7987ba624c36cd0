"""A registry reload on a SQL registry in PostgreSQL: an unchanged registry is recognised
by the database's digest of its rows, without reading or parsing a single object, and
every change, including one committed while a reload reads, is loaded."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from module_database import scratch

from feature_platform.feast_seam import registry as seam
from feature_platform.feast_seam.registry import reload_cache


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    yield from scratch("registry_reload")


def _config(repo: Path, database: str) -> Any:
    from feast.repo_config import RepoConfig

    return RepoConfig(
        project="reload",
        provider="local",
        repo_path=str(repo),
        registry={
            "registry_type": "sql",
            "path": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "cache_ttl_seconds": 0,
        },
        online_store={
            "type": "feature_platform.stores.sqlite_online.SqliteOnlineStore",
            "path": str(repo / "online.db"),
        },
        offline_store={"type": "feature_platform.stores.duckdb_offline.DuckDBOfflineStore"},
        entity_key_serialization_version=3,
    )


def _objects(repo: Path) -> dict[str, Any]:
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
    from feast.types import Int64

    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    counts = FeatureView(
        name="counts",
        entities=[customer],
        ttl=timedelta(days=1),
        schema=[Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)],
        source=FileSource(path=str(repo / "counts.parquet"), timestamp_field="event_timestamp"),
    )
    return {
        "customer": customer,
        "counts": counts,
        "svc": FeatureService(name="svc", features=[counts]),
    }


class _Reads:
    """Counts the registry's full reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        # run once, right after the next read: another process's commit landing then
        self.after: list[Any] = []
        read = seam.read_sql_registry

        def counted(registry: Any) -> Any:
            self.count += 1
            proto = read(registry)
            for step in self.after:
                step()
            self.after.clear()
            return proto

        monkeypatch.setattr(seam, "read_sql_registry", counted)


@pytest.fixture
def stores(
    tmp_path: Path, database: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Any, Any, _Reads]]:
    """The server's store (reloading) and another process's (applying), on a registry
    that holds the objects; the server's registry loaded once, its reads counted."""
    import psycopg
    from feast import FeatureStore

    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={database}", autocommit=True) as c:
        for (table,) in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"):
            c.execute(f'TRUNCATE "{table}"')
    other = FeatureStore(config=_config(tmp_path, database))
    other.apply(list(_objects(tmp_path).values()))
    server = FeatureStore(config=_config(tmp_path, database))
    server.list_feature_views(allow_cache=True)  # loaded, as at a server's start
    reads = _Reads(monkeypatch)
    yield server, other, reads


def _cached_view(store: Any, name: str) -> Any:
    return next(v for v in store.list_feature_views(allow_cache=True) if v.name == name)


def test_an_unchanged_registry_is_neither_read_nor_parsed(stores: tuple[Any, Any, _Reads]) -> None:
    server, _, reads = stores
    cached = server.registry.cached_registry_proto
    assert reload_cache(server) is False  # the first reload reads: no digest yet
    assert reads.count == 1
    for _ in range(3):
        assert reload_cache(server) is False
    assert reads.count == 1
    assert server.registry.cached_registry_proto is cached


@pytest.mark.parametrize("change", ["new entity", "description", "deleted service", "materialized"])
def test_every_change_is_loaded(
    stores: tuple[Any, Any, _Reads], tmp_path: Path, change: str
) -> None:
    from feast import Entity, ValueType

    server, other, reads = stores
    assert reload_cache(server) is False
    objects = _objects(tmp_path)
    if change == "new entity":  # a row more
        other.apply(
            [Entity(name="merchant", join_keys=["merchant_id"], value_type=ValueType.INT64)]
        )
    elif change == "description":  # the same rows, one of them rewritten
        objects["counts"].description = "changed"
        other.apply([objects["counts"]])
    elif change == "deleted service":  # a row fewer
        other.delete_feature_service("svc")
    else:  # what a materialization job writes: the view's intervals
        now = datetime.now(UTC)
        other.registry.apply_materialization(
            objects["counts"], other.project, now - timedelta(hours=1), now, commit=True
        )
    assert reload_cache(server) is True
    assert reads.count == 2
    if change == "new entity":
        assert "merchant" in {e.name for e in server.list_entities(allow_cache=True)}
    elif change == "description":
        assert _cached_view(server, "counts").description == "changed"
    elif change == "deleted service":
        assert "svc" not in {
            s.name for s in server.registry.list_feature_services(server.project, allow_cache=True)
        }
    else:
        assert _cached_view(server, "counts").materialization_intervals
    assert seam._same_objects(server.registry.cached_registry_proto, server.registry.proto())
    assert reload_cache(server) is False
    assert reads.count == 2


def test_a_change_committed_while_a_reload_reads_is_loaded_by_the_next(
    stores: tuple[Any, Any, _Reads], tmp_path: Path
) -> None:
    """The digest is taken before the read: a change that lands after the read, before
    the reload ends, makes the next digest differ, so the next reload reads it."""
    server, other, reads = stores
    view = _objects(tmp_path)["counts"]
    view.description = "during the read"
    reads.after.append(lambda: other.apply([view]))
    assert reload_cache(server) is False  # read before the change landed
    assert reads.count == 1
    assert reload_cache(server) is True
    assert _cached_view(server, "counts").description == "during the read"
    assert reads.count == 2
