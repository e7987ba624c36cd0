"""Who may do what: Feast's permission decision, made once per identity and registry.

Feast's servers decide through their security manager: for every resource, the
permissions whose types, name patterns and actions match it vote, and one granting
policy allows (no permissions at all: every authenticated caller is allowed). The
platform's fast path reads Redis without Feast's code, so it asks this module instead.
The decision itself is Feast's own `enforce_policy` over the registry's permissions;
what this module adds is a cache, so a request pays a dict lookup, and the list of
resources each kind of request touches, the same ones Feast's feature server asserts.

A decision depends only on the caller's roles, groups and namespaces (and, with no
permissions, on whether it has a name): the policies a registry can hold are role,
group, namespace or group-and-namespace based. So decisions are cached per those, per
resource (type and name) and per set of actions, and dropped when the registry snapshot
changes. Feast's security manager reads the permissions from the registry database on
every check; this reads the cached registry the server refreshes, so a changed
permission takes effect within one refresh interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from feast import FeatureService, FeatureStore, FeatureView, OnDemandFeatureView
from feast.data_source import PushSource
from feast.errors import FeastObjectNotFoundException, FeastPermissionError
from feast.feast_object import FeastObject
from feast.feature_view_utils import get_feature_view_from_feature_store
from feast.permissions.action import WRITE, AuthzedAction
from feast.permissions.enforcer import enforce_policy
from feast.permissions.permission import Permission
from feast.permissions.server.utils import AuthManagerType, str_to_auth_manager_type
from feast.permissions.user import User

from feature_platform.auth.errors import forbidden
from feature_platform.errors import bad_request, not_found
from feature_platform.feast_seam.feature_refs import parse_feature_ref

# Distinct (identity, resources, actions) keys kept per snapshot; past it the cache
# starts over rather than grow with every new combination a caller sends.
MAX_CACHED_DECISIONS = 10_000

_ResourceKey = tuple[type, str]
_UserKey = tuple[bool, frozenset[str], frozenset[str], frozenset[str]]


def _resource_key(resource: Any) -> _ResourceKey:
    return (type(resource), resource.name)


def _user_key(user: User) -> _UserKey:
    return (
        bool(user.username),
        frozenset(user.roles),
        frozenset(user.groups),
        frozenset(user.namespaces),
    )


def _action_names(actions: Iterable[AuthzedAction]) -> str:
    return ", ".join(sorted(a.value for a in actions))


def push_actions(to: str) -> list[AuthzedAction]:
    """The actions Feast's `/push` asserts for a push `to` online, offline or both."""
    if to == "online":
        return [AuthzedAction.WRITE_ONLINE]
    if to == "offline":
        return [AuthzedAction.WRITE_OFFLINE]
    if to == "online_and_offline":
        return list(WRITE)
    raise bad_request("'to' must be one of 'online', 'offline', 'online_and_offline'")


class AccessDecider:
    """Allow or deny, as Feast's security manager would for the store's registry.

    With `AUTH_TYPE=no_auth` Feast installs no security manager and checks nothing;
    `enforced` is then false and every request is allowed. `enforce` overrides that.
    """

    def __init__(self, store: FeatureStore, enforce: bool | None = None) -> None:
        self.store = store
        if enforce is None:
            auth_type = str_to_auth_manager_type(store.config.auth_config.type)
            enforce = auth_type != AuthManagerType.NONE
        self.enforced = enforce
        self._snapshot: Any = None
        self._permissions: list[Permission] = []
        self._decisions: dict[Any, str | None] = {}
        self._resources: dict[Any, tuple[FeastObject, ...]] = {}

    # The registry snapshot: the cached proto the server's refresh replaces whole.
    def _current(self) -> None:
        snapshot = getattr(self.store.registry, "cached_registry_proto", None)
        if snapshot is self._snapshot and snapshot is not None:
            return
        permissions = self.store.registry.list_permissions(
            project=self.store.project, allow_cache=True
        )
        # Read again: listing can itself load a newer snapshot.
        self._snapshot = getattr(self.store.registry, "cached_registry_proto", None)
        self._permissions = permissions
        self._decisions = {}
        self._resources = {}

    @property
    def permissions(self) -> list[Permission]:
        """The permissions decisions are made from now."""
        self._current()
        return self._permissions

    def denial(
        self,
        user: User,
        resources: Sequence[FeastObject],
        actions: Sequence[AuthzedAction],
    ) -> str | None:
        """None when allowed, else why not (which action on which resource)."""
        if not self.enforced:
            return None
        self._current()
        key = (_user_key(user), tuple(map(_resource_key, resources)), frozenset(actions))
        try:
            return self._decisions[key]
        except KeyError:
            pass
        reason = self._decide(user, resources, actions)
        decisions = self._decisions
        if len(decisions) >= MAX_CACHED_DECISIONS:
            decisions = self._decisions = {}
        decisions[key] = reason
        return reason

    def allowed(
        self,
        user: User,
        resources: Sequence[FeastObject],
        actions: Sequence[AuthzedAction],
    ) -> bool:
        return self.denial(user, resources, actions) is None

    def _decide(
        self,
        user: User,
        resources: Sequence[FeastObject],
        actions: Sequence[AuthzedAction],
    ) -> str | None:
        # Feast's servers assert one resource at a time and nothing when there is none
        # (a push source no view uses); the first denied resource names the reason.
        for resource in resources:
            try:
                enforce_policy(
                    permissions=self._permissions,
                    user=user,
                    resources=[resource],
                    actions=list(actions),
                    filter_only=False,
                )
            except FeastPermissionError:
                kind = type(resource).__name__
                return f"{_action_names(actions)} on {kind} {resource.name!r} is not permitted"
        return None

    # The resources Feast's feature server asserts, per request shape and snapshot.

    def read_resources(
        self, feature_service: str | None, features: Sequence[str] = ()
    ) -> tuple[FeastObject, ...]:
        """What `/get-online-features` asserts READ_ONLINE on.

        A feature service: the service alone (Feast does not check its views). Feature
        references: each referenced feature view or on-demand view, and the source views
        of each on-demand view.
        """
        self._current()
        key = ("read", feature_service, tuple(features))
        found = self._resources.get(key)
        if found is None:
            found = self._resolve_read(feature_service, features)
            self._resources[key] = found
        return found

    def _resolve_read(
        self, feature_service: str | None, features: Sequence[str]
    ) -> tuple[FeastObject, ...]:
        store = self.store
        if feature_service is not None:
            try:
                service: FeatureService = store.get_feature_service(
                    feature_service, allow_cache=True
                )
            except FeastObjectNotFoundException:
                raise not_found(f"feature service {feature_service!r} does not exist") from None
            return (service,)
        views: dict[_ResourceKey, FeastObject] = {}
        odfvs: dict[_ResourceKey, FeastObject] = {}
        for ref in features:
            try:
                name = parse_feature_ref(ref)[0]
            except ValueError:
                raise not_found(
                    f"feature reference {ref!r} is not of the form view:feature"
                ) from None
            view = self._any_view(name)
            if isinstance(view, OnDemandFeatureView):
                odfvs.setdefault(_resource_key(view), view)
                for source in view.source_feature_view_projections.values():
                    source_view = self._any_view(source.name)
                    views.setdefault(_resource_key(source_view), source_view)
            else:
                views.setdefault(_resource_key(view), view)
        return (*views.values(), *odfvs.values())

    def _any_view(self, name: str) -> FeastObject:
        try:
            view = self.store.registry.get_any_feature_view(
                name, self.store.project, allow_cache=True
            )
        except FeastObjectNotFoundException:
            raise not_found(f"feature view {name!r} does not exist") from None
        return view  # type: ignore[return-value]

    def push_resources(self, push_source_name: str) -> tuple[FeastObject, ...]:
        """What `/push` asserts its write actions on: every view fed by the push source.

        A push source no view uses asserts nothing, as in Feast.
        """
        self._current()
        key = ("push", push_source_name)
        found = self._resources.get(key)
        if found is None:
            store = self.store
            candidates: list[FeatureView] = [
                *store.list_feature_views(allow_cache=True),
                *store.list_stream_feature_views(allow_cache=True),
            ]
            by_key: dict[_ResourceKey, FeastObject] = {}
            for view in candidates:
                source = view.stream_source
                if isinstance(source, PushSource) and source.name == push_source_name:
                    by_key.setdefault(_resource_key(view), view)
            found = tuple(by_key.values())
            self._resources[key] = found
        return found

    def write_resources(self, feature_view_name: str) -> tuple[FeastObject, ...]:
        """What `/write-to-online-store` asserts WRITE_ONLINE on: the named view."""
        self._current()
        key = ("write", feature_view_name)
        found = self._resources.get(key)
        if found is None:
            try:
                view = get_feature_view_from_feature_store(
                    self.store, feature_view_name, allow_registry_cache=True
                )
            except FeastObjectNotFoundException:
                raise not_found(f"feature view {feature_view_name!r} does not exist") from None
            found = (view,)
            self._resources[key] = found
        return found


def require(
    decider: AccessDecider,
    user: User,
    resources: Sequence[FeastObject],
    actions: Sequence[AuthzedAction],
) -> None:
    """403 unless `user` may take `actions` on every one of `resources`."""
    reason = decider.denial(user, resources, actions)
    if reason is not None:
        raise forbidden(reason)
