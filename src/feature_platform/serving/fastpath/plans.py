"""Read plans: what a feature request needs, worked out once per registry snapshot.

Feast resolves a feature service from the registry on every request (about 2 ms of
the 4 ms a request costs at its defaults). A plan holds the resolved views, Redis
field names, join keys and types, and is rebuilt only when what it was built from (its
feature service and views) changes in the registry: a refresh that loads a registry
changed elsewhere keeps the other plans, so the request path does not rebuild them.
A request the plans cannot describe exactly is served by Feast's own path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from feast import FeatureStore, FeatureView, OnDemandFeatureView
from feast.value_type import ValueType

from feature_platform.errors import PlatformError, not_found
from feature_platform.feast_seam.conversion import mmh3
from feature_platform.stores.online_ttl import ttl_seconds

# Value types decoded on the fast path; anything else goes to Feast's path.
SCALAR_TYPES = {
    ValueType.INT64,
    ValueType.INT32,
    ValueType.DOUBLE,
    ValueType.STRING,
    ValueType.BOOL,
}
JOIN_KEY_TYPES = {ValueType.INT64: int, ValueType.INT32: int, ValueType.STRING: str}


class Unsupported(PlatformError):
    """The request is valid, but only Feast's own path serves it exactly."""


@dataclass
class ViewPlan:
    name: str
    join_keys: list[str]
    features: list[str]
    # HMGET fields: one hash per feature, then the view's write timestamp.
    fields: list[bytes | str]
    # Older values are served as null (stores/online_ttl.py); 0: never.
    ttl_s: int = 0


@dataclass
class OdfvPlan:
    view: OnDemandFeatureView
    features: list[str]
    value_types: dict[str, ValueType]
    sources: list[str]


@dataclass
class KeyGroup:
    """Views keyed by the same join keys. Feast keeps all of an entity's views in one
    Redis hash, so one HMGET per entity reads every view of the group."""

    join_keys: list[str]
    views: list[ViewPlan]
    # every view's fields, view after view; `offsets[i]` is where view i's start
    fields: list[bytes | str]
    offsets: list[int]


@dataclass
class ReadPlan:
    views: list[ViewPlan]
    odfvs: list[OdfvPlan]
    join_key_types: dict[str, ValueType]
    request_types: dict[str, ValueType]
    groups: list[KeyGroup] = field(default_factory=list)

    def __post_init__(self) -> None:
        by_keys: dict[tuple[str, ...], KeyGroup] = {}
        for view in self.views:
            group = by_keys.get(tuple(view.join_keys))
            if group is None:
                group = by_keys[tuple(view.join_keys)] = KeyGroup(view.join_keys, [], [], [])
                self.groups.append(group)
            group.views.append(view)
            group.offsets.append(len(group.fields))
            group.fields.extend(view.fields)


# The registry's objects a plan is built from, by (registry proto field, name).
Inputs = frozenset[tuple[str, str]]
INPUT_KINDS = ("feature_services", "feature_views", "on_demand_feature_views")


def specs(snapshot: Any, project: str) -> dict[tuple[str, str], Any]:
    """The project's feature services and views in a registry proto: their specs (what was
    applied; the metadata, such as materialization intervals, is left out)."""
    return {
        (kind, proto.spec.name): proto.spec
        for kind in INPUT_KINDS
        for proto in getattr(snapshot, kind)
        if proto.spec.project == project
    }


class KeptWhileUnchanged:
    """Values worked out from the store's registry snapshot (a caching registry's proto),
    per key, each kept across a snapshot change while its inputs' specs are unchanged
    (without a caching registry, for one call)."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._snapshot: Any = None
        self._specs: dict[tuple[str, str], Any] = {}
        self._values: dict[Any, tuple[Any, Inputs]] = {}

    def current(self) -> Any:
        """The snapshot of the moment; the values whose inputs changed in it are dropped."""
        snapshot = getattr(self.store.registry, "cached_registry_proto", None)
        if snapshot is self._snapshot and snapshot is not None:
            return snapshot
        if snapshot is None:
            self._values, self._specs = {}, {}
        elif self._values:
            new = specs(snapshot, self.store.project)
            old = self._specs
            self._values = {
                key: (value, inputs)
                for key, (value, inputs) in self._values.items()
                if all(old.get(name) == new.get(name) for name in inputs)
            }
            self._specs = new
        else:
            self._specs = {}  # read when a value is first kept on this snapshot
        self._snapshot = snapshot
        return snapshot

    def get(self, key: Any) -> tuple[Any] | None:
        """(value,) when kept, else None."""
        entry = self._values.get(key)
        return None if entry is None else (entry[0],)

    def keep(
        self, snapshot: Any, key: Any, value: Any, service: str | None, views: set[str]
    ) -> None:
        """Keep `value`, worked out on `snapshot` from the feature service and views named."""
        if snapshot is not None and not self._specs:
            self._specs = specs(snapshot, self.store.project)
        inputs = {(kind, name) for name in views for kind in INPUT_KINDS[1:]}
        if service is not None:
            inputs.add(("feature_services", service))
        self._values[key] = (value, frozenset(inputs))


class PlanCache:
    """Plans per request shape, each kept while its feature service and views are
    unchanged in the registry."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self._plans = KeptWhileUnchanged(store)

    def get(self, feature_service: str | None, features: tuple[str, ...]) -> ReadPlan:
        snapshot = self._plans.current()
        key = (feature_service, features)
        kept = self._plans.get(key)
        if kept is None:
            views: set[str] = set()
            plan: ReadPlan | Unsupported
            try:
                plan = self._build(feature_service, features, views)
            except Unsupported as exc:
                plan = exc
            self._plans.keep(snapshot, key, plan, feature_service, views)
        else:
            (plan,) = kept
        if isinstance(plan, Unsupported):
            raise plan
        return plan

    def _refs(
        self, feature_service: str | None, features: tuple[str, ...]
    ) -> list[tuple[str, str]]:
        """(view, feature) pairs in request order; 404 for what the registry lacks."""
        store = self.store
        if feature_service is not None:
            try:
                service = store.get_feature_service(feature_service, allow_cache=True)
            except Exception:
                raise not_found(f"feature service {feature_service!r} does not exist") from None
            return [
                (projection.name, f.name)
                for projection in service.feature_view_projections
                for f in projection.features
            ]
        refs = []
        for ref in features:
            view, sep, name = ref.partition(":")
            if not sep or not view or not name:
                raise not_found(f"feature reference {ref!r} is not of the form view:feature")
            refs.append((view, name))
        return refs

    def _build(
        self, feature_service: str | None, features: tuple[str, ...], views_read: set[str]
    ) -> ReadPlan:
        """The plan; `views_read` gets the name of every view it was built from."""
        refs = self._refs(feature_service, features)
        views: dict[str, ViewPlan] = {}
        odfvs: dict[str, OdfvPlan] = {}
        join_key_types: dict[str, ValueType] = {}
        request_types: dict[str, ValueType] = {}
        if len({name for _, name in refs}) != len(refs):
            raise Unsupported("two features share a name: only full feature names tell them apart")
        for view_name, feature in refs:
            views_read.add(view_name)
            view = self._view(view_name)
            if isinstance(view, OnDemandFeatureView):
                plan = odfvs.get(view_name)
                if plan is None:
                    if view.mode != "python" or getattr(view, "write_to_online_store", False):
                        raise Unsupported(f"on-demand view {view_name} in mode {view.mode}")
                    plan = OdfvPlan(view, [], {}, list(view.source_feature_view_projections))
                    for request_source in view.source_request_sources.values():
                        for f in request_source.schema:
                            request_types[f.name] = f.dtype.to_value_type()
                    odfvs[view_name] = plan
                dtypes = {f.name: f.dtype for f in view.features}
                if feature not in dtypes:
                    raise not_found(f"feature {view_name}:{feature} does not exist")
                plan.features.append(feature)
                plan.value_types[feature] = dtypes[feature].to_value_type()
            else:
                plan_v = views.get(view_name)
                if plan_v is None:
                    plan_v = ViewPlan(
                        view_name, list(view.join_keys), [], [], ttl_seconds(view.ttl)
                    )
                    for column in view.entity_columns:
                        value_type = column.dtype.to_value_type()
                        if value_type not in JOIN_KEY_TYPES:
                            raise Unsupported(f"join key {column.name} of type {value_type}")
                        join_key_types[column.name] = value_type
                    views[view_name] = plan_v
                dtypes = {f.name: f.dtype for f in view.features}
                if feature not in dtypes:
                    raise not_found(f"feature {view_name}:{feature} does not exist")
                if dtypes[feature].to_value_type() not in SCALAR_TYPES:
                    raise Unsupported(f"feature {view_name}:{feature} is not a scalar")
                plan_v.features.append(feature)
                plan_v.fields.append(mmh3(f"{view_name}:{feature}"))
        for plan_v in views.values():
            plan_v.fields.append(f"_ts:{plan_v.name}")
        for odfv in odfvs.values():
            # Feast fetches an on-demand view's inputs even when they are not asked for.
            for source in odfv.sources:
                views_read.add(source)
                needed = {f.name for f in self._view(source).features}
                have = set(views[source].features) if source in views else set()
                if needed - have:
                    raise Unsupported(f"inputs of {odfv.view.name} not all requested")
        return ReadPlan(list(views.values()), list(odfvs.values()), join_key_types, request_types)

    def _view(self, name: str) -> FeatureView | OnDemandFeatureView:
        store = self.store
        try:
            return store.get_feature_view(name, allow_registry_cache=True)
        except Exception:
            pass
        try:
            return store.get_on_demand_feature_view(name, allow_registry_cache=True)
        except Exception:
            raise not_found(f"feature view {name!r} does not exist") from None
