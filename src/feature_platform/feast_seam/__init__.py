"""Everything the platform takes from Feast beyond its public API, in one place.

Each seam is one reliance on a Feast private name, or one patch of Feast; `SEAMS` lists
them and tests/unit/feast_seam pins each against the installed Feast (`make
feast-candidate FEAST_VERSION=x.y.z` runs those tests against another release). Outside
this package the platform calls the seam, never the private name
(tests/unit/feast_seam/test_seam_guard.py fails otherwise). On the feature server's
request path a seam is Feast's own function object, so calling it costs nothing more.

The `hooks` are the exception: private methods of Feast's classes that the platform's
subclasses override or call on themselves. An override belongs to its class, so it stays
there; its seam names the module, and the guard fails on one no seam declares.

conversion.redis_key                 the Redis hash key of an entity key, as Feast writes it
conversion.mmh3                      the Redis hash field of a feature, as Feast writes it
conversion.build_entity_keys         EntityKey protos from columns of join key values
conversion.versioned_view_name       the view name in Redis fields, versioned or not
conversion.column_names              a view's source columns: join keys, features, times
conversion.arrow_to_proto            Arrow rows as the (key, values, times) an online write takes
feature_refs.parse_feature_ref       "view:feature" split as Feast splits it
feature_refs.resolve                 the references, views and groups get_historical_features uses
feature_refs.projected_feature_name  an on-demand view's output column name for a feature
feature_store.provider               a FeatureStore's provider (online and offline stores)
feature_store.views_to_materialize   the views materialize would load
feature_store.precompute_services    the precomputed services a materialization refreshes
feature_store.repo_contents          a repository's objects as `feast apply` reads them
stores.redis_connection_string       Feast's parse of a Redis connection string
stores.sqlite_tables                 a SQLite online table's name, quoted
stores.duckdb_data_source_io         duckdb's reader and writer of a data source
stores.postgres_connection           the psycopg conninfo and arguments of a Postgres config
stores.postgres_source_table         the table a PostgreSQLSource names
stores.logged_feature_service        the feature service a served-vector log source is of
registry.cache_reload                the caching registry's cached proto, reloaded in place
registry.digest                      a SQL registry's rows, digested to tell it unchanged
registry.read                        a SQL registry's proto, read in one statement
registry.release                     a job's registry: refresh timer, exit handler, engines
registry.rest_server                 the REST registry app built from Feast's pieces
registry.grpc_interceptors           Feast's registry server interceptors for an auth type
hooks.redis_client                   Redis store methods overridden in stores/redis_online.py
hooks.sqlite_connection              the SQLite store's connection, used in stores/sqlite_online.py
hooks.offline_call_api               the offline server's dispatch, overridden in servers/offline.py
auth.server_managers                 Feast's process-wide auth and security managers, initialized
auth.token_parser                    the process-wide auth manager, on the platform's verifier
auth.cached_security_manager         permissions read from the cached registry
patches.online_ttl                   the ttl rule on Feast's per-view response builder
patches.postgres_password            Feast's Postgres connections with the password file's value
patches.import_feast_unchecked       Feast imported without typeguard's instrumentation
patches.compared_also_by             a feature service whose == also compares more
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from feature_platform.errors import PlatformError


class BrokenSeam(PlatformError):
    """A seam's private name is not in the installed Feast."""


def feast_private(owner: Any, name: str, seam: str) -> Any:
    """`owner.<name>`, Feast's own object, so calling it costs nothing more. Where the
    installed Feast has no such name, a stand-in that raises BrokenSeam when called: what
    uses the seam fails, naming it, and the modules beside it still import."""
    found = getattr(owner, name, None)
    if found is not None:
        return found

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        where = getattr(owner, "__name__", type(owner).__name__)
        raise BrokenSeam(f"seam {seam}: the installed Feast has no {where}.{name}")

    return broken


@dataclass(frozen=True)
class Seam:
    name: str
    """`<module>.<seam>`, as the tests' `@pytest.mark.seam(...)` names it."""
    relies_on: str
    """What Feast must keep doing for the seam to hold."""
    feast_names: tuple[str, ...] = ()
    """The private names used or overridden, as `module:attribute.path`."""
    overridden_in: str = ""
    """For a hook: the platform module whose subclass overrides the names."""

    @property
    def module(self) -> str:
        """The module holding the seam."""
        return self.overridden_in or f"{__name__}.{self.name.split('.', 1)[0]}"


_HELPERS = "feast.infra.online_stores.helpers"
_REDIS = "feast.infra.online_stores.redis:RedisOnlineStore"
_FEATURE_STORE = "feast.feature_store:FeatureStore"
_SQLITE = "feast.infra.online_stores.sqlite"
_DUCKDB = "feast.infra.offline_stores.duckdb"
_POSTGRES_CONNECTION = "feast.infra.utils.postgres.connection_utils"
_CACHING = "feast.infra.registry.caching_registry:CachingRegistry"
_REST = "feast.api.registry.rest.rest_registry_server:RestRegistryServer"
_SECURITY = "feast.permissions.security_manager:SecurityManager"

SEAMS: tuple[Seam, ...] = (
    Seam(
        "conversion.redis_key",
        "_redis_key(project, entity_key, entity_key_serialization_version) returns the "
        "serialized entity key followed by the project's bytes",
        (f"{_HELPERS}:_redis_key",),
    ),
    Seam(
        "conversion.mmh3",
        "_mmh3(key) is the 4-byte little-endian murmur3 hash Feast uses as a hash field",
        (f"{_HELPERS}:_mmh3",),
    ),
    Seam(
        "conversion.build_entity_keys",
        "_build_entity_keys(num_rows, join_keys, proto_values) returns one EntityKey per "
        "row, join keys in the mapping's order",
        ("feast.utils:_build_entity_keys",),
    ),
    Seam(
        "conversion.versioned_view_name",
        "_versioned_fv_name(table, config) is the view's name when versioning is off",
        ("feast.infra.online_stores.redis:_versioned_fv_name",),
    ),
    Seam(
        "conversion.column_names",
        "_get_column_names(view, entities) returns (join keys, features, timestamp "
        "column, created column), source names after the field mapping",
        ("feast.utils:_get_column_names",),
    ),
    Seam(
        "conversion.arrow_to_proto",
        "_convert_arrow_to_proto(table, view, join_keys) returns (EntityKey, values, "
        "event time, created time) per row",
        ("feast.utils:_convert_arrow_to_proto",),
    ),
    Seam(
        "feature_refs.parse_feature_ref",
        "_parse_feature_ref(ref) returns a tuple whose first item is the view name",
        ("feast.utils:_parse_feature_ref",),
    ),
    Seam(
        "feature_refs.resolve",
        "_get_features, _get_feature_views_to_use and _group_feature_refs resolve a "
        "service or references as get_historical_features does",
        (
            "feast.utils:_get_features",
            "feast.utils:_get_feature_views_to_use",
            "feast.utils:_group_feature_refs",
        ),
    ),
    Seam(
        "feature_refs.projected_feature_name",
        "OnDemandFeatureView._get_projected_feature_name(name) is `<view>__<name>`",
        ("feast.on_demand_feature_view:OnDemandFeatureView._get_projected_feature_name",),
    ),
    Seam(
        "feature_store.provider",
        "FeatureStore._get_provider() returns the provider holding the configured stores",
        (f"{_FEATURE_STORE}._get_provider",),
    ),
    Seam(
        "feature_store.views_to_materialize",
        "FeatureStore._get_feature_views_to_materialize(None) lists the online views",
        (f"{_FEATURE_STORE}._get_feature_views_to_materialize",),
    ),
    Seam(
        "feature_store.precompute_services",
        "FeatureStore._precompute_affected_services(view_names), called after a load as "
        "Feast's materialize calls it, takes the loaded views' names",
        (f"{_FEATURE_STORE}._precompute_affected_services",),
    ),
    Seam(
        "feature_store.repo_contents",
        "_get_repo_contents(repo_path, project_name, repo_config) returns the repository's "
        "RepoContents",
        ("feast.repo_operations:_get_repo_contents",),
    ),
    Seam(
        "stores.redis_connection_string",
        "RedisOnlineStore._parse_connection_string(text) returns (nodes, client kwargs)",
        (f"{_REDIS}._parse_connection_string",),
    ),
    Seam(
        "stores.sqlite_tables",
        "_table_id(project, table, enable_versioning) names a view's table, _quote_id "
        "quotes it for SQL",
        (f"{_SQLITE}:_table_id", f"{_SQLITE}:_quote_id"),
    ),
    Seam(
        "stores.duckdb_data_source_io",
        "_read_data_source(source, repo_path) returns an ibis table; _write_data_source "
        "is the writer Feast's ibis functions take",
        (f"{_DUCKDB}:_read_data_source", f"{_DUCKDB}:_write_data_source"),
    ),
    Seam(
        "stores.postgres_connection",
        "_get_conninfo(config) and _get_conn_kwargs(config) are what Feast connects with",
        (f"{_POSTGRES_CONNECTION}:_get_conninfo", f"{_POSTGRES_CONNECTION}:_get_conn_kwargs"),
    ),
    Seam(
        "stores.postgres_source_table",
        "PostgreSQLSource._postgres_options._table is the table given, '' for a query",
        (
            "feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source"
            ":PostgreSQLSource._postgres_options",
            "feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source"
            ":PostgreSQLOptions._table",
        ),
    ),
    Seam(
        "stores.logged_feature_service",
        "FeatureServiceLoggingSource._feature_service is the service it was made for",
        ("feast.feature_logging:FeatureServiceLoggingSource._feature_service",),
    ),
    Seam(
        "registry.cache_reload",
        "a CachingRegistry answers allow_cache reads from cached_registry_proto, stamped "
        "cached_registry_proto_created (_utc_now); FeatureStore._clear_feature_service_cache",
        (
            f"{_CACHING}.cached_registry_proto",
            f"{_CACHING}.cached_registry_proto_created",
            "feast.utils:_utc_now",
            f"{_FEATURE_STORE}._clear_feature_service_cache",
        ),
    ),
    Seam(
        "registry.digest",
        "SqlRegistry.proto() reads the registry only from rows of the tables in "
        "feast.infra.registry.sql.metadata, through its read_engine",
    ),
    Seam(
        "registry.read",
        "SqlRegistry.proto() lists the projects, and per project each object table's proto "
        "column into the registry proto's field of the table's name (project set), the "
        "project's managed_infra row 'infra_obj' and the newest project's update time",
        ("feast.infra.registry.sql:projects", "feast.infra.registry.sql:managed_infra"),
    ),
    Seam(
        "registry.release",
        "FeatureStore._registry is None until the registry is used; a caching registry "
        "runs registry_refresh_thread and registers _exit_handler with atexit",
        (f"{_FEATURE_STORE}._registry", f"{_CACHING}._exit_handler"),
    ),
    Seam(
        "registry.rest_server",
        "RestRegistryServer.__init__ sets store, registry, grpc_handler, "
        "recent_visits_limit, log_patterns and app, then calls the four methods used here",
        (
            f"{_REST}._add_exception_handlers",
            f"{_REST}._add_openapi_security",
            f"{_REST}._init_auth",
            f"{_REST}._register_routes",
        ),
    ),
    Seam(
        "registry.grpc_interceptors",
        "_grpc_interceptors(auth_type) returns Feast's registry server interceptors",
        ("feast.registry_server:_grpc_interceptors",),
    ),
    Seam(
        "hooks.redis_client",
        "the Redis store reads through _get_client/_get_client_async, which parse the "
        "connection string with _parse_connection_string, caches the clients in "
        "_client/_client_async and decodes a row in _get_features_for_entity",
        (
            f"{_REDIS}._get_client",
            f"{_REDIS}._get_client_async",
            f"{_REDIS}._parse_connection_string",
            f"{_REDIS}._client",
            f"{_REDIS}._client_async",
            f"{_REDIS}._get_features_for_entity",
        ),
        overridden_in="feature_platform.stores.redis_online",
    ),
    Seam(
        "hooks.sqlite_connection",
        "SqliteOnlineStore._get_conn(config) returns the store's sqlite3 connection",
        (f"{_SQLITE}:SqliteOnlineStore._get_conn",),
        overridden_in="feature_platform.stores.sqlite_online",
    ),
    Seam(
        "hooks.offline_call_api",
        "OfflineServer dispatches every Flight call's API through _call_api(api, command, key)",
        ("feast.offline_server:OfflineServer._call_api",),
        overridden_in="feature_platform.servers.offline",
    ),
    Seam(
        "auth.server_managers",
        "init_security_manager/init_auth_manager (and the offline server's "
        "_init_auth_manager) set the process-wide managers Feast's servers read",
        ("feast.offline_server:_init_auth_manager",),
    ),
    Seam(
        "auth.token_parser",
        "set_auth_manager replaces the process-wide auth manager whose parser Feast's servers call",
        (),
    ),
    Seam(
        "auth.cached_security_manager",
        "SecurityManager keeps _registry, _project and _current_project, and enforces "
        "through its permissions property",
        (f"{_SECURITY}._registry", f"{_SECURITY}._project", f"{_SECURITY}._current_project"),
    ),
    Seam(
        "patches.online_ttl",
        "every online read builds its response per view in "
        "feast.utils._populate_response_from_feature_data, looked up at call time",
        ("feast.utils:_populate_response_from_feature_data",),
    ),
    Seam(
        "patches.postgres_password",
        "Feast's Postgres connections (_get_conn, _get_conn_async, the pools) take their "
        "conninfo from connection_utils._get_conninfo, looked up at call time",
        (f"{_POSTGRES_CONNECTION}:_get_conninfo",),
    ),
    Seam(
        "patches.import_feast_unchecked",
        "Feast reads typeguard.typechecked when its modules are imported",
        (),
    ),
    Seam(
        "patches.compared_also_by",
        "FeatureService.__eq__ ignores logging_config, and a registry's apply skips an "
        "object equal to the stored one by that ==",
        (),
    ),
)


def by_name() -> dict[str, Seam]:
    return {seam.name: seam for seam in SEAMS}
