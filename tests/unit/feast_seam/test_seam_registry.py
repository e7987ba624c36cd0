"""registry.*: the caching registry's cache, a job's registry released, the REST
registry app and the gRPC interceptors, on a real SQL registry (SQLite)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import json
import re
import textwrap
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from seam_helpers import asgi_get, assert_params, repo_config


def _entity(name: str) -> Any:
    from feast import Entity, ValueType

    return Entity(name=name, join_keys=[f"{name}_id"], value_type=ValueType.INT64)


def _cached_entities(store: Any) -> set[str]:
    return {e.name for e in store.list_entities(allow_cache=True)}


@pytest.mark.seam("registry.cache_reload")
def test_allow_cache_reads_answer_from_the_reloaded_proto(
    registry: ModuleType, store: Any, tmp_path: Path
) -> None:
    from feast import FeatureStore

    assert_params(FeatureStore._clear_feature_service_cache, "self")
    other = FeatureStore(config=repo_config(tmp_path))  # another process's apply
    other.apply([_entity("merchant")])
    assert "merchant" not in _cached_entities(store)
    before = store.registry.cached_registry_proto_created
    assert registry.reload_cache(store) is True
    assert "merchant" in _cached_entities(store)
    assert store.registry.cached_registry_proto_created > before
    # Unchanged: the same cached copy (what the server's read plans are keyed on), stamped.
    cached, stamped = (
        store.registry.cached_registry_proto,
        store.registry.cached_registry_proto_created,
    )
    assert registry.reload_cache(store) is False
    assert store.registry.cached_registry_proto is cached
    assert store.registry.cached_registry_proto_created > stamped
    # Feast decides to refresh by cached_registry_proto_created: the stamp written here
    # keeps the copy, an old one makes Feast reload it on the next read.
    other.apply([_entity("terminal")])
    assert "terminal" not in _cached_entities(store)
    store.registry.cached_registry_proto_created -= timedelta(days=1)
    assert "terminal" in _cached_entities(store)


@pytest.mark.seam("registry.digest")
def test_the_registry_is_read_only_from_the_tables_digested(
    registry: ModuleType, store: Any
) -> None:
    """What reload_cache digests (every table of Feast's SQL registry metadata) covers
    every row proto() reads."""
    from feast.infra.registry.sql import metadata

    tables = _tables_read_by_proto(store)
    assert tables, "proto() read nothing through read_engine"
    assert tables <= {table.name for table in metadata.sorted_tables}


def _tables_read_by_proto(store: Any) -> set[str]:
    """The tables whose rows proto() reads, from the statements it sends."""
    from sqlalchemy import event

    read: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        read.append(statement)

    engine = store.registry.read_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        store.registry.proto()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return {
        name.strip('"').lower()
        for statement in read
        for name in re.findall(r"\b(?:FROM|JOIN)\s+(\"?\w+\"?)", statement, re.I)
    }


def _add_every_kind(store: Any, repo: Path) -> None:
    """An object of every kind proto() lists, and a second project with one entity."""
    from feast import Entity, Field, FileSource, PushSource, ValueType
    from feast.infra.infra_object import Infra
    from feast.infra.offline_stores.file_source import SavedDatasetFileStorage
    from feast.infra.online_stores.sqlite import SqliteTable
    from feast.infra.registry.sql import SqlRegistry, validation_references
    from feast.labeling.label_view import LabelView
    from feast.permissions.permission import Permission
    from feast.permissions.policy import RoleBasedPolicy
    from feast.protos.feast.core.ValidationProfile_pb2 import (
        ValidationReference as ValidationReferenceProto,
    )
    from feast.saved_dataset import SavedDataset
    from feast.stream_feature_view import StreamFeatureView
    from feast.types import Int64
    from sqlalchemy import insert

    registry, project = store.registry, store.project
    assert isinstance(registry, SqlRegistry)
    customer = store.get_entity("customer")
    pushed = PushSource(
        name="counts_push",
        batch_source=FileSource(
            path=str(repo / "counts.parquet"), timestamp_field="event_timestamp"
        ),
    )
    schema = [Field(name="customer_id", dtype=Int64), Field(name="n", dtype=Int64)]
    registry.apply_data_source(pushed, project)
    registry.apply_feature_view(
        StreamFeatureView(
            name="counts_stream", source=pushed, entities=[customer], schema=schema,
            timestamp_field="event_timestamp",
        ),
        project,
    )  # fmt: skip
    registry.apply_feature_view(
        LabelView(name="labels", source=pushed.batch_source, entities=[customer], schema=schema),
        project,
    )
    registry.apply_saved_dataset(
        SavedDataset(
            name="dataset", features=["counts:n"], join_keys=["customer_id"],
            storage=SavedDatasetFileStorage(path=str(repo / "dataset.parquet")),
        ),
        project,
    )  # fmt: skip
    # written as its row: ValidationReference.to_proto needs great_expectations
    reference = ValidationReferenceProto(name="reference", reference_dataset_name="dataset")
    with registry.write_engine.begin() as connection:
        connection.execute(
            insert(validation_references).values(
                validation_reference_name="reference", project_id=project,
                last_updated_timestamp=0, validation_reference_proto=reference.SerializeToString(),
            )
        )  # fmt: skip
    registry.apply_permission(
        Permission(name="readers", policy=RoleBasedPolicy(roles=["reader"])), project
    )
    registry.apply_entity(
        Entity(name="account", join_keys=["account_id"], value_type=ValueType.INT64), "another"
    )
    for name in (project, "another"):
        registry.update_infra(Infra([SqliteTable(str(repo / "online.db"), f"{name}_t")]), name)


@pytest.mark.seam("registry.read")
def test_the_registry_read_in_one_statement_is_what_proto_builds(
    registry: ModuleType, store: Any, tmp_path: Path
) -> None:
    _add_every_kind(store, tmp_path)
    assert _tables_read_by_proto(store) == {"projects", "managed_infra", *registry._OBJECT_TABLES}
    feasts, ours = store.registry.proto(), registry.read_sql_registry(store.registry)
    for field in ("projects", *registry._OBJECT_TABLES):
        assert getattr(ours, field), f"no {field} to compare"
    assert len(ours.projects) == 2
    # one infra in the proto: proto()'s is of the project it read last, ours of the last by
    # name (the projects' order is no part of what the registry holds)
    infras = {name: store.registry.get_infra(name).to_proto() for name in ("another", "seam")}
    assert ours.infra == infras["seam"] and ours.infra.infra_objects
    assert feasts.infra in infras.values()
    feasts.ClearField("infra")
    ours.ClearField("infra")
    assert registry._same_objects(ours, feasts)
    del feasts.feature_views[0]
    assert not registry._same_objects(ours, feasts)
    # read again, unchanged: equal in its order too (reload_cache compares whole copies)
    again = registry.read_sql_registry(store.registry)
    again.ClearField("infra")
    assert again == ours


@pytest.mark.seam("registry.release")
def test_a_released_registry_leaves_nothing_running(registry: ModuleType, tmp_path: Path) -> None:
    from feast import FeatureStore
    from feast.infra.registry.caching_registry import CachingRegistry

    store = FeatureStore(config=repo_config(tmp_path, cache_mode="thread", cache_ttl_seconds=60))
    assert store._registry is None
    registry.release(store)  # never created: nothing to release
    created = store.registry
    assert store._registry is created
    # what release takes back (atexit lists no registrations to check against)
    assert "atexit.register(self._exit_handler)" in inspect.getsource(CachingRegistry.__init__)
    timer = created.registry_refresh_thread
    assert timer.is_alive()
    registry.release(store)
    timer.join(5)
    assert not timer.is_alive()


@pytest.mark.seam("registry.release")
def test_a_stopped_refresh_timer_leaves_the_registry_readable(
    registry: ModuleType, tmp_path: Path
) -> None:
    """The feature server's one refresher: the registry's own timer stopped, reads go on."""
    from feast import FeatureStore

    store = FeatureStore(config=repo_config(tmp_path, cache_mode="thread", cache_ttl_seconds=60))
    store.apply([_entity("customer")])
    timer = store.registry.registry_refresh_thread
    assert timer.is_alive()
    registry.stop_refresh_timer(store)
    timer.join(5)
    assert not timer.is_alive()
    assert registry.reload_cache(store) is True
    assert "customer" in _cached_entities(store)
    registry.release(store)


def _init_body() -> tuple[set[str], set[str]]:
    """The attributes RestRegistryServer.__init__ sets and the methods it calls on self."""
    from feast.api.registry.rest.rest_registry_server import RestRegistryServer

    tree = ast.parse(textwrap.dedent(inspect.getsource(RestRegistryServer.__init__)))
    assigned, called = set(), set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and isinstance(node.ctx, ast.Store)
        ):
            assigned.add(node.attr)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "self"
        ):
            called.add(node.func.attr)
    return assigned, called


@pytest.mark.seam("registry.rest_server")
def test_the_rest_app_is_assembled_as_feasts_init_does(registry: ModuleType, store: Any) -> None:
    from fastapi import FastAPI

    assigned, called = _init_body()
    assert assigned == {
        "store", "registry", "grpc_handler", "recent_visits_limit", "log_patterns", "app"
    }  # fmt: skip
    # the visit-logging middleware is left out on purpose (servers/registry.py)
    assert called == {
        "_add_exception_handlers", "_add_logging_middleware", "_add_openapi_security",
        "_init_auth", "_register_routes",
    }  # fmt: skip
    app = registry.rest_registry_app(store, FastAPI())
    status, body = asyncio.run(asgi_get(app, "/entities", "project=seam"))
    assert status == 200, body
    assert "customer" in {entity["spec"]["name"] for entity in json.loads(body)["entities"]}


@pytest.mark.seam("registry.grpc_interceptors")
def test_feasts_registry_interceptors_by_auth_type(registry: ModuleType) -> None:
    from feast.grpc_error_interceptor import ErrorInterceptor
    from feast.permissions.server.grpc import AuthInterceptor
    from feast.permissions.server.utils import AuthManagerType
    from feast.registry_server import _grpc_interceptors

    assert_params(_grpc_interceptors, "auth_type")
    kinds = [type(i) for i in registry.grpc_interceptors(AuthManagerType.NONE)]
    assert kinds == [ErrorInterceptor]
    kinds = [type(i) for i in registry.grpc_interceptors(AuthManagerType.OIDC)]
    assert kinds == [AuthInterceptor, ErrorInterceptor]
