"""Read plans and served-vector logging plans across registry refreshes, on a real SQL
registry (SQLite): each is kept while its feature service and views are unchanged, and
worked out again when they change."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from feature_platform.feast_seam.registry import reload_cache
from feature_platform.serving.fastpath.plans import PlanCache


def _customer() -> Any:
    from feast import Entity, ValueType

    return Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)


def _view(name: str, ttl_hours: int = 2, description: str = "") -> Any:
    from feast import FeatureView, Field, FileSource
    from feast.types import Int64

    return FeatureView(
        name=name,
        entities=[_customer()],
        ttl=timedelta(hours=ttl_hours),
        schema=[Field(name="customer_id", dtype=Int64), Field(name=f"{name}_n", dtype=Int64)],
        source=FileSource(path="unused.parquet", timestamp_field="event_timestamp"),
        description=description,
    )


def _store(repo: Path) -> Any:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    return FeatureStore(
        config=RepoConfig(
            project="plans",
            provider="local",
            repo_path=str(repo),
            registry={"registry_type": "sql", "path": f"sqlite:///{repo}/registry.db"},
            online_store={"type": "sqlite", "path": str(repo / "online.db")},
            entity_key_serialization_version=3,
        )
    )


@pytest.fixture
def stores(tmp_path: Path) -> tuple[Any, Any]:
    """The server's store (caching registry) and another process's, which applies."""
    from feast import FeatureService

    applier = _store(tmp_path)
    served = _view("served")
    applier.apply([_customer(), served, _view("unrelated")])
    applier.apply([FeatureService(name="svc", features=[served])])
    server = _store(tmp_path)
    server.registry.proto()  # loaded, as the server does at start
    return server, applier


def test_a_registry_changed_elsewhere_keeps_the_plans(stores: tuple[Any, Any]) -> None:
    server, applier = stores
    plans = PlanCache(server)
    plan = plans.get("svc", ())
    by_features = plans.get(None, ("served:served_n",))
    applier.apply([_view("unrelated", description="changed")])
    assert reload_cache(server) is True
    assert plans.get("svc", ()) is plan
    assert plans.get(None, ("served:served_n",)) is by_features


def test_a_changed_view_rebuilds_the_plans_that_read_it(stores: tuple[Any, Any]) -> None:
    server, applier = stores
    plans = PlanCache(server)
    plan = plans.get("svc", ())
    assert plan.views[0].ttl_s == 2 * 3600
    applier.apply([_view("served", ttl_hours=5)])
    assert reload_cache(server) is True
    rebuilt = plans.get("svc", ())
    assert rebuilt is not plan
    assert rebuilt.views[0].ttl_s == 5 * 3600


def test_a_changed_service_rebuilds_its_plan(stores: tuple[Any, Any]) -> None:
    from feast import FeatureService

    server, applier = stores
    plans = PlanCache(server)
    assert [v.name for v in plans.get("svc", ()).views] == ["served"]
    applier.apply([FeatureService(name="svc", features=[_view("served"), _view("unrelated")])])
    assert reload_cache(server) is True
    assert [v.name for v in plans.get("svc", ()).views] == ["served", "unrelated"]


def test_a_registry_changed_elsewhere_keeps_the_served_vector_logging_plan(
    stores: tuple[Any, Any], tmp_path: Path
) -> None:
    from feast import FeatureService
    from feast.feature_logging import LoggingConfig
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    from feature_platform.serving.vector_log import VectorLog

    server, applier = stores
    logging = LoggingConfig(FileLoggingDestination(path=str(tmp_path / "log")), sample_rate=1.0)
    applier.apply(
        [FeatureService(name="logged", features=[_view("served")], logging_config=logging)]
    )
    assert reload_cache(server) is True
    vector_log = VectorLog(server, 10, 60)
    plan = vector_log._service("logged")
    assert plan is not None
    applier.apply([_view("unrelated", description="changed")])
    assert reload_cache(server) is True
    assert vector_log._service("logged") is plan
    applier.apply([_view("served", ttl_hours=5)])  # a view it logs: worked out again
    assert reload_cache(server) is True
    assert vector_log._service("logged") is not plan
