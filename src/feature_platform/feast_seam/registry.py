"""Feast's registry internals: the caching registry's cache, a job's registry released,
the REST registry app and the gRPC registry's interceptors built from Feast's pieces."""

from __future__ import annotations

import atexit
import functools
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from feast import FeatureStore


def reload_cache(store: FeatureStore) -> bool:
    """Load the registry into the store's cache, raising on failure (CachingRegistry's
    refresh swallows its errors; the cached copy is left as it was). Whether it changed:
    an unchanged registry keeps its cached copy, so what was derived from that copy (the
    feature server's read plans) stays.

    A SQL registry on PostgreSQL is first asked for a digest of all its rows, computed by
    the database: when it equals the digest taken before the cached copy was read, the
    registry is unchanged and nothing is read or parsed (reading and parsing every object
    is milliseconds of Python for a few hundred views, in a thread that shares the
    interpreter with the server's event loop). A changed SQL registry is read in one
    statement (`read_sql_registry`), not proto()'s transaction per table and project."""
    from feast.infra.registry.caching_registry import CachingRegistry
    from feast.utils import _utc_now

    registry = store.registry
    if not isinstance(registry, CachingRegistry):
        store.refresh_registry()
        return True
    # taken before the read: a change committed during the read differs from it
    digest = _digest(registry)
    changed = digest is None or digest != _digests.get(registry)
    if changed:
        fresh = read_sql_registry(registry) if digest is not None else registry.proto()
        changed = fresh != registry.cached_registry_proto
        if changed and digest is not None and registry not in _digests:
            # the cached copy is Feast's read, whose objects come in another order
            changed = not _same_objects(fresh, registry.cached_registry_proto)
        if changed:
            registry.cached_registry_proto = fresh
            store._clear_feature_service_cache()
        if digest is not None:
            _digests[registry] = digest
    registry.cached_registry_proto_created = _utc_now()
    return changed


def _same_objects(one: Any, other: Any) -> bool:
    """Two registry protos hold the same objects, in whatever order."""

    def contents(proto: Any) -> list[Any]:
        return [
            (field.name, sorted(o.SerializeToString(deterministic=True) for o in value))
            if field.is_repeated
            else (field.name, value)
            for field, value in proto.ListFields()
        ]

    return contents(one) == contents(other)


# the digest of the rows the registry's cached copy was read from, per registry
_digests: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _digest(registry: Any) -> str | None:
    """md5 over every row of every table of a SQL registry on PostgreSQL, in the
    database; None for any other registry."""
    from feast.infra.registry.sql import SqlRegistry, metadata
    from sqlalchemy import text

    if not isinstance(registry, SqlRegistry):
        return None
    engine = registry.read_engine
    if engine.dialect.name != "postgresql":
        return None
    quote = engine.dialect.identifier_preparer.quote
    per_table = " UNION ALL ".join(
        f"SELECT '{table.name}' AS name, md5(string_agg(md5(r::text), '' "
        f"ORDER BY md5(r::text))) AS digest FROM {quote(table.name)} r"
        for table in metadata.sorted_tables
    )
    query = (
        "SELECT md5(string_agg(name || ':' || coalesce(digest, ''), ',' ORDER BY name)) "
        f"FROM ({per_table}) t"
    )
    with engine.connect() as connection:
        return str(connection.execute(text(query)).scalar_one())


# proto()'s object tables in the order it lists them: each is the registry proto's field
# of the same name, read from the table's one `*_proto` column
_OBJECT_TABLES = (
    "entities",
    "feature_views",
    "data_sources",
    "on_demand_feature_views",
    "stream_feature_views",
    "feature_services",
    "saved_datasets",
    "validation_references",
    "permissions",
    "label_views",
)
_INFRA_NAME = "infra_obj"
# the kinds of row, beside the object tables' positions in _OBJECT_TABLES
_PROJECTS, _INFRA = -1, -2


def read_sql_registry(registry: Any) -> Any:
    """The RegistryProto that a SqlRegistry's proto() builds, from one statement: its
    projects, each project's objects (the project set on each, as proto() sets it), the
    last project's managed infra and the newest project's update time. proto() opens a
    transaction per table and project, which is most of its cost (10 ms of CPU for 200
    views, against 2 ms here); the objects themselves parse in a fraction of that. One
    statement also reads one snapshot, where proto()'s transactions can each see a
    different moment of an apply under way.

    Rows come in the order of their names, where proto()'s come in the tables' order: the
    same objects, and with several projects the infra of the last by name (Feast's
    registry proto holds one infra, of whichever project it read last)."""
    from feast.infra.infra_object import Infra
    from feast.project import Project
    from feast.protos.feast.core.InfraObject_pb2 import Infra as InfraProto
    from feast.protos.feast.core.Project_pb2 import Project as ProjectProto
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto

    with registry.read_engine.connect() as connection:
        rows = connection.execute(_one_statement()).all()
    listed: list[Project] = []
    found: dict[tuple[int, str], list[bytes]] = {}
    for kind, project_id, _, proto in rows:
        if kind == _PROJECTS:
            listed.append(Project.from_proto(ProjectProto.FromString(proto)))
        else:
            found.setdefault((kind, project_id), []).append(proto)

    out = RegistryProto()
    fields = RegistryProto.DESCRIPTOR.fields_by_name
    for project in listed:
        out.projects.append(project.to_proto())
        for kind, field in enumerate(_OBJECT_TABLES):
            container = getattr(out, field)
            with_spec = "spec" in fields[field].message_type.fields_by_name
            for proto in found.get((kind, project.name), ()):
                obj = container.add()
                obj.MergeFromString(proto)
                (obj.spec if with_spec else obj).project = project.name
        infra_protos = found.get((_INFRA, project.name))
        out.infra.CopyFrom(
            Infra.from_proto(InfraProto.FromString(infra_protos[0])).to_proto()
            if infra_protos
            else Infra().to_proto()
        )
    if listed:
        out.last_updated.FromDatetime(max(p.last_updated_timestamp for p in listed))
    return out


@functools.cache
def _one_statement() -> Any:
    """(kind, project, name, proto bytes) of every row read_sql_registry reads, ordered
    by the first three: the same order in every read, so an unchanged registry reads
    equal."""
    from feast.infra.registry import sql
    from sqlalchemy import literal, select, union_all

    def part(kind: int, table: Any) -> Any:
        name = next(iter(table.columns))  # each table's first column names its row
        (proto,) = (c for c in table.columns if c.name.endswith("_proto"))
        return select(
            literal(kind).label("kind"),
            table.c.project_id,
            name.label("name"),
            proto.label("proto"),
        )

    return union_all(
        part(_PROJECTS, sql.projects),
        part(_INFRA, sql.managed_infra).where(sql.managed_infra.c.infra_name == _INFRA_NAME),
        *(part(kind, getattr(sql, name)) for kind, name in enumerate(_OBJECT_TABLES)),
    ).order_by("kind", "project_id", "name")


def stop_refresh_timer(store: FeatureStore) -> None:
    """Cancel a caching registry's own refresh timer (`cache_mode: thread`), in a process
    that refreshes the registry itself: one refresher, not two."""
    timer = getattr(store.registry, "registry_refresh_thread", None)
    if timer is not None:
        timer.cancel()


def release(store: FeatureStore) -> None:
    """Stop what a caching registry keeps running for the life of the process: its
    refresh timer, its exit handler and (SQL registry) its database engines. Nothing
    when the store never created its registry."""
    registry = store._registry
    if registry is not None:
        stop_refresh_timer(store)
    exit_handler = getattr(registry, "_exit_handler", None)
    if exit_handler is not None:
        atexit.unregister(exit_handler)
    for engine in {getattr(registry, name, None) for name in ("write_engine", "read_engine")}:
        if engine is not None:
            engine.dispose()


def rest_registry_app(store: FeatureStore, app: FastAPI) -> FastAPI:
    """`app` with the routes, error handlers and auth of Feast's REST registry server.

    Feast's `RestRegistryServer.__init__` cannot run with the FastAPI this project locks
    (servers/registry.py says why), so the instance is assembled here as it does, less
    its visit-logging middleware, and with the caller's `app`."""
    from feast.api.registry.rest.rest_registry_server import RestRegistryServer
    from feast.registry_server import RegistryServer

    rest = RestRegistryServer.__new__(RestRegistryServer)
    rest.store = store
    rest.registry = store.registry
    rest.grpc_handler = RegistryServer(store.registry, store=store)
    # read by Feast's metrics routes; no visit is recorded here
    rest.recent_visits_limit = 100
    rest.log_patterns = []
    rest.app = app
    rest._add_exception_handlers()
    rest._add_openapi_security()
    rest._init_auth()
    rest._register_routes()
    return app


def grpc_interceptors(auth_type: Any) -> list[Any]:
    """Feast's own interceptors of its registry server for `auth_type` (auth, errors)."""
    from feast.registry_server import _grpc_interceptors

    return _grpc_interceptors(auth_type) or []
