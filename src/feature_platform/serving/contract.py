"""What the feature server answers: its endpoints and their OpenAPI document, in one place.

The allowlist and the document come from the same table, so they cannot drift: a path
the document does not describe answers 404 (unless `FEATURE_SERVER_FEAST_ENDPOINTS`
turns on one of Feast's own), a documented path asked with another method answers 405.
The document is built for the server's write mode and the registry it serves: its
examples are real requests against this project, so a client (or a fuzzer) can start
from something that works.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from feast import FeatureStore
from feast.data_source import PushSource
from feast.value_type import ValueType

from feature_platform.errors import HTTPError
from feature_platform.quality import expectations
from feature_platform.serving.fastpath.plans import PlanCache, Unsupported

# path -> methods: everything the platform serves itself.
ENDPOINTS: dict[str, tuple[str, ...]] = {
    "/health": ("GET",),
    "/ready": ("GET",),
    "/metrics": ("GET",),
    "/openapi.json": ("GET",),
    "/get-online-features": ("POST",),
    "/push": ("POST",),
    "/write-to-online-store": ("POST",),
}
# Feast's endpoints that write; served only when turned on, and gated like the others.
FEAST_WRITE_PATHS = ("/materialize", "/materialize-incremental")
WRITE_PATHS = frozenset({"/push", "/write-to-online-store", *FEAST_WRITE_PATHS})

_ERROR = {"$ref": "#/components/schemas/Error"}
_STATUSES = ["PRESENT", "NOT_FOUND", "NULL_VALUE", "OUTSIDE_MAX_AGE"]
_COLUMNS = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": {"type": "array", "minItems": 1, "items": {}},
    "description": "Columns: each name maps to a list of values, all lists of one length.",
}
_FLAG = {"type": "boolean", "default": True}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _post(
    summary: str,
    request: str,
    ok: dict[str, Any],
    example: dict[str, Any] | None,
    writes: bool,
    write_mode: str,
    identities: bool,
) -> dict[str, Any]:
    body: dict[str, Any] = {"schema": {"$ref": f"#/components/schemas/{request}"}}
    if example is not None:
        body["example"] = example
    responses: dict[str, Any] = {
        "200": ok,
        "400": _error("Malformed JSON, or columns that do not fit the schema (named)"),
        "404": _error("Unknown feature service, feature view, feature or push source"),
        "408": _error("The request did not arrive within the read timeout"),
        "413": _error("Body larger than FEATURE_SERVER_MAX_BODY_BYTES, or too many entities"),
        "422": _error("A field of the wrong kind"),
        "503": _error(
            "The online or offline store failed or did not answer in time, or the server is "
            "at capacity (FEATURE_SERVER_MAX_IN_FLIGHT; with a Retry-After header)"
        ),
    }
    if writes:
        responses["422"] = _error(
            "A field of the wrong kind, or a row breaking its view's expectations under the "
            "view's `refuse` policy (view, feature, rule and row named)"
        )
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": body}},
        "responses": responses,
    }
    if identities:
        # every caller is identified; the registry's permissions decide (auth/decision.py)
        responses["401"] = _error("No valid bearer token (OIDC or Kubernetes)")
        responses["403"] = _error("The caller's roles do not permit this")
        operation["security"] = [{"bearer": []}]
    elif writes:
        responses["403"] = _error("Writes are off on this server")
        if write_mode == "token":
            responses["401"] = _error("No valid bearer token")
            operation["security"] = [{"bearer": []}]
    return operation


def _get(summary: str, ok: dict[str, Any], unavailable: bool = False) -> dict[str, Any]:
    responses = {"200": ok}
    if unavailable:
        responses["503"] = _error("Not ready: the registry or the online store is not there")
    return {"summary": summary, "responses": responses}


def _write_request(name_field: str, **more: Any) -> dict[str, Any]:
    """Rows for the object named by `name_field`, as columns."""
    return {
        "type": "object",
        "required": [name_field, "df"],
        "properties": {
            name_field: {"type": "string", "minLength": 1},
            "df": _COLUMNS,
            **more,
            "allow_registry_cache": _FLAG,
            "transform_on_write": _FLAG,
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "GetOnlineFeaturesRequest": {
        "type": "object",
        "required": ["entities"],
        "anyOf": [{"required": ["feature_service"]}, {"required": ["features"]}],
        "properties": {
            "entities": _COLUMNS,
            "feature_service": {"type": "string", "nullable": True},
            "features": {
                "type": "array",
                "items": {"type": "string"},
                "description": "Feature references, `view:feature`",
            },
            "full_feature_names": {"type": "boolean", "default": False},
            "include_feature_view_version_metadata": {"type": "boolean", "default": False},
        },
    },
    "OnlineFeaturesResponse": {
        "type": "object",
        "required": ["metadata", "results"],
        "properties": {
            "metadata": {
                "type": "object",
                "required": ["feature_names"],
                "properties": {"feature_names": {"type": "array", "items": {"type": "string"}}},
            },
            "results": {
                "type": "array",
                "description": "One entry per name in metadata.feature_names, in that order",
                "items": {
                    "type": "object",
                    "required": ["values", "statuses", "event_timestamps"],
                    "properties": {
                        "values": {"type": "array", "items": {}},
                        "statuses": {
                            "type": "array",
                            "items": {"type": "string", "enum": _STATUSES},
                        },
                        "event_timestamps": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "PushRequest": _write_request(
        "push_source_name",
        to={
            "type": "string",
            "enum": ["online", "offline", "online_and_offline"],
            "default": "online",
        },
    ),
    "WriteToOnlineStoreRequest": _write_request("feature_view_name"),
}


def document(store: FeatureStore, write_mode: str, identities: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.0 document of what this server answers; with `identities`, the data
    endpoints and this document need a bearer token."""
    examples = _Examples(store)
    written = {"description": "Written"}
    paths = {
        "/health": {
            "get": _get("Liveness: the process answers", _json("Alive", {"type": "object"}))
        },
        "/ready": {
            "get": _get(
                "Readiness: the registry holds the project and the online store answers",
                _json("Ready", {"type": "object"}),
                unavailable=True,
            )
        },
        "/metrics": {
            "get": _get(
                "Prometheus metrics of every worker",
                {"description": "Metrics", "content": {"text/plain": {"schema": {}}}},
            )
        },
        "/openapi.json": {"get": _get("This document", _json("OpenAPI 3.0", {"type": "object"}))},
        "/get-online-features": {
            "post": _post(
                "Feature vectors for entity rows",
                "GetOnlineFeaturesRequest",
                _json("The vectors", {"$ref": "#/components/schemas/OnlineFeaturesResponse"}),
                examples.online(),
                writes=False,
                write_mode=write_mode,
                identities=identities,
            )
        },
        "/push": {
            "post": _post(
                "Rows of a push source, to the online store, the offline store or both",
                "PushRequest",
                written,
                examples.push(),
                writes=True,
                write_mode=write_mode,
                identities=identities,
            )
        },
        "/write-to-online-store": {
            "post": _post(
                "Rows of one feature view, to the online store",
                "WriteToOnlineStoreRequest",
                written,
                examples.write(),
                writes=True,
                write_mode=write_mode,
                identities=identities,
            )
        },
    }
    components: dict[str, Any] = {"schemas": _SCHEMAS}
    if identities:
        openapi = paths["/openapi.json"]["get"]
        openapi["responses"]["401"] = _error("No valid bearer token (OIDC or Kubernetes)")
        openapi["security"] = [{"bearer": []}]
    if identities or write_mode == "token":
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": f"Feature server: {store.project}", "version": "1"},
        "paths": paths,
        "components": components,
    }


class _Examples:
    """Requests that work against this registry: its first feature service, push source
    and feature view, with made-up values of the declared types."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def online(self) -> dict[str, Any] | None:
        services = self.store.registry.list_feature_services(self.store.project, allow_cache=True)
        if not services:
            return None
        try:
            plan = PlanCache(self.store).get(services[0].name, ())
        except (Unsupported, HTTPError):
            return None
        entities = {
            name: [_value(kind)]
            for name, kind in {**plan.join_key_types, **plan.request_types}.items()
        }
        return {"feature_service": services[0].name, "entities": entities}

    def push(self) -> dict[str, Any] | None:
        for view in self.store.list_feature_views(allow_cache=True):
            if isinstance(view.stream_source, PushSource):
                return {
                    "push_source_name": view.stream_source.name,
                    "df": _row(view),
                    "to": "online",
                }
        return None

    def write(self) -> dict[str, Any] | None:
        views = self.store.list_feature_views(allow_cache=True)
        return {"feature_view_name": views[0].name, "df": _row(views[0])} if views else None


def _row(view: Any) -> dict[str, list[Any]]:
    """One row of `view` that meets its expectations (`quality/`)."""
    expected = expectations.of_view(view.name, view.tags)
    rules = expected.features if expected else {}
    row = {
        field.name: [_meeting(_value(field.dtype.to_value_type()), rules.get(field.name, {}))]
        for field in (*view.entity_columns, *view.features)
    }
    if view.batch_source is not None:
        row[view.batch_source.timestamp_field] = ["2026-01-01T00:00:00+00:00"]
    return row


def _meeting(value: Any, rules: Mapping[str, Any]) -> Any:
    if "allowed" in rules:
        return rules["allowed"][0]
    if "min" in rules and value < rules["min"]:
        return rules["min"]
    if "max" in rules and value > rules["max"]:
        return rules["max"]
    return value


def _value(kind: ValueType) -> Any:
    if kind in (ValueType.INT64, ValueType.INT32):
        return 1
    if kind in (ValueType.DOUBLE, ValueType.FLOAT):
        return 1.5
    if kind == ValueType.BOOL:
        return True
    return "a"
