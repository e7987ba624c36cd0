"""feature_store.*: FeatureStore's private methods the platform calls, on a real store."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from seam_helpers import assert_params, repo_config

REPO_FILE = """
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
counts = FeatureView(
    name="counts",
    entities=[customer],
    ttl=timedelta(hours=2),
    schema=[Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)],
    source=FileSource(path="counts.parquet", timestamp_field="event_timestamp"),
)
"""


@pytest.mark.seam("feature_store.provider")
def test_the_provider_holds_the_configured_stores(feature_store: ModuleType, store: Any) -> None:
    from feast import FeatureStore

    from feature_platform.stores.duckdb_offline import DuckDBOfflineStore
    from feature_platform.stores.sqlite_online import SqliteOnlineStore

    assert_params(feature_store.provider, "self")
    # Feast's method itself: /push calls it, at no extra cost
    assert feature_store.provider is FeatureStore._get_provider
    provider = feature_store.provider(store)
    assert isinstance(provider.online_store, SqliteOnlineStore)
    assert isinstance(provider.offline_store, DuckDBOfflineStore)
    assert feature_store.provider(store) is provider


@pytest.mark.seam("feature_store.views_to_materialize")
def test_views_to_materialize_are_the_online_views(feature_store: ModuleType, store: Any) -> None:
    assert_params(feature_store.views_to_materialize, "self, feature_views")
    views = feature_store.views_to_materialize(store, None)
    assert [view.name for view in views] == ["counts"]


@pytest.mark.seam("feature_store.precompute_services")
def test_precompute_takes_the_materialized_view_names(
    feature_store: ModuleType, store: Any
) -> None:
    assert_params(feature_store.precompute_services, "self, materialized_fv_names")
    # No service of this store precomputes: nothing to do, and nothing raised.
    assert not store.get_feature_service("svc").precompute_online
    assert feature_store.precompute_services(store, ["counts"]) is None


@pytest.mark.seam("feature_store.repo_contents")
def test_repo_contents_are_the_objects_the_files_define(
    feature_store: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert_params(feature_store.repo_contents, "repo_path, project_name, repo_config")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "seam_definitions.py").write_text(REPO_FILE)
    config = repo_config(repo)
    # As rollouts/plan.py calls it: the repository as working directory and import root.
    monkeypatch.chdir(repo)
    monkeypatch.syspath_prepend(str(repo))
    try:
        contents = feature_store.repo_contents(repo, config.project, config)
    finally:
        sys.modules.pop("seam_definitions", None)
    assert [view.name for view in contents.feature_views] == ["counts"]
    assert "customer" in [entity.name for entity in contents.entities]
