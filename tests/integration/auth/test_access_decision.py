"""The platform's access decision against Feast's own, on a real SQL registry.

Three comparisons, each case counted: Feast's security manager (`assert_permissions`,
reading the permissions from the registry database) against `AccessDecider.allowed`
(reading the server's cached registry) for every registry object, identity and set of
actions under the repository's permissions; Feast's own feature server app, driven
in-process with a token for each identity, against the decider on the resources it lists
for that request; and the same comparison over permission sets hypothesis generates,
one decider kept across them so every change must reach it through a registry refresh.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pytest
from feast import (
    BatchFeatureView,
    Entity,
    FeatureService,
    FeatureStore,
    FeatureView,
    OnDemandFeatureView,
    Project,
)
from feast.data_source import DataSource
from feast.errors import FeastPermissionError
from feast.feast_object import FeastObject
from feast.feature_server import get_app
from feast.permissions.action import ALL_ACTIONS, WRITE, AuthzedAction
from feast.permissions.auth.auth_manager import AllowAll, AuthManager, set_auth_manager
from feast.permissions.auth.token_parser import TokenParser
from feast.permissions.permission import Permission
from feast.permissions.policy import (
    CombinedGroupNamespacePolicy,
    GroupBasedPolicy,
    NamespaceBasedPolicy,
    Policy,
    RoleBasedPolicy,
)
from feast.permissions.security_manager import (
    SecurityManager,
    no_security_manager,
    set_security_manager,
)
from feast.permissions.server.rest_token_extractor import RestTokenExtractor
from feast.permissions.user import User
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stacks import Stack

from feature_platform.auth.decision import AccessDecider, push_actions, require
from feature_platform.errors import HTTPError

READER, WRITER, TRAINING, FRAUD_V1 = (
    "feature-reader",
    "feature-writer",
    "training",
    "fraud-detection-v1",
)
SERVICE = "fraud_detection_v1"
# A second service, so name patterns have one service to match and one not to.
OTHER_SERVICE = "fraud_detection_v2"

USERS = {
    "nobody": User("", []),
    "no-roles": User("svc", []),
    "reader": User("r", [READER]),
    "writer": User("w", [WRITER]),
    "training": User("t", [TRAINING]),
    "fraud-v1": User("f", [FRAUD_V1]),
    "reader+training": User("rt", [READER, TRAINING]),
    "stranger": User("s", ["payments-admin"]),
}
ACTION_SETS: list[list[AuthzedAction]] = [
    *([a] for a in ALL_ACTIONS),
    [AuthzedAction.READ_ONLINE, AuthzedAction.DESCRIBE],
    list(WRITE),
    [AuthzedAction.DESCRIBE, AuthzedAction.UPDATE],
    list(ALL_ACTIONS),
]

COUNTS: dict[str, dict[str, int]] = {}


def _tally(kind: str, feast: bool, ours: bool) -> None:
    c = COUNTS.setdefault(
        kind, {"cases": 0, "allowed": 0, "wrongly_allowed": 0, "wrongly_denied": 0}
    )
    c["cases"] += 1
    c["allowed"] += feast
    c["wrongly_allowed"] += ours and not feast
    c["wrongly_denied"] += feast and not ours


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Iterator[None]:
    yield
    print("\naccess decision cases:", json.dumps(COUNTS, sort_keys=True))


# --- the registry ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(stack_factory: Any, generated_tables: dict[str, pd.DataFrame]) -> Stack:
    """dev with the repository applied (its permissions included), and one more service."""
    stack = stack_factory("dev", "access")
    stack.write(generated_tables)
    stack.feast("apply")
    store = stack.store()
    views = {v.name: v for v in store.list_feature_views()}
    extra = FeatureService(name=OTHER_SERVICE, features=[views["merchant_stats"]])
    store.registry.apply_feature_service(extra, store.project)
    return stack


@pytest.fixture(scope="module")
def store(stack: Stack) -> FeatureStore:
    store = stack.store()
    store.refresh_registry()
    return store


@pytest.fixture(scope="module")
def repo_permissions(store: FeatureStore) -> list[Permission]:
    permissions = store.registry.list_permissions(store.project)
    assert {p.name for p in permissions} >= {"read-online-views", "write-online", "read-offline"}
    return permissions


def objects(store: FeatureStore) -> list[FeastObject]:
    """Every object of the project the registry holds."""
    registry, project = store.registry, store.project
    found: list[Any] = [
        *registry.list_projects(),
        *registry.list_feature_views(project),
        *registry.list_on_demand_feature_views(project),
        *registry.list_feature_services(project),
        *registry.list_entities(project),
        *registry.list_data_sources(project),
        *registry.list_permissions(project),
    ]
    return [o for o in found if not isinstance(o, Project) or o.name == project]


def set_permissions(store: FeatureStore, permissions: list[Permission]) -> None:
    registry, project = store.registry, store.project
    for existing in registry.list_permissions(project):
        registry.delete_permission(existing.name, project)
    for permission in permissions:
        registry.apply_permission(permission, project)


@pytest.fixture
def restore_permissions(store: FeatureStore, repo_permissions: list[Permission]) -> Iterator[None]:
    yield
    set_permissions(store, repo_permissions)
    store.refresh_registry()


def feast_allows(
    manager: SecurityManager, user: User, resources: list[Any], actions: list[Any]
) -> bool:
    manager.set_current_user(user)
    try:
        manager.assert_permissions(resources=resources, actions=actions)
    except FeastPermissionError:
        return False
    return True


# --- the repository's permissions -------------------------------------------------------------


def test_the_decision_is_feasts_for_every_object_identity_and_action(
    store: FeatureStore, repo_permissions: list[Permission]
) -> None:
    decider = AccessDecider(store, enforce=True)
    manager = SecurityManager(project=store.project, registry=store.registry)
    everything = objects(store)
    mismatches = []
    for (who, user), resource, actions in itertools.product(USERS.items(), everything, ACTION_SETS):
        feast = feast_allows(manager, user, [resource], actions)
        ours = decider.allowed(user, [resource], actions)
        _tally("repository permissions", feast, ours)
        if feast != ours:
            mismatches.append((who, type(resource).__name__, resource.name, actions))
    assert mismatches == []
    counts = COUNTS["repository permissions"]
    assert 0 < counts["allowed"] < counts["cases"]


def test_the_repository_grants_what_each_role_is_for(store: FeatureStore) -> None:
    decider = AccessDecider(store, enforce=True)
    views = {v.name: v for v in store.list_feature_views()}
    services = {s.name: s for s in store.list_feature_services()}
    ondemand = store.get_on_demand_feature_view("transaction_vs_history")
    read, write = [AuthzedAction.READ_ONLINE], [AuthzedAction.WRITE_ONLINE]
    offline = [AuthzedAction.READ_OFFLINE]
    stats = views["customer_stats"]

    def allowed(who: str, resource: Any, actions: list[AuthzedAction]) -> bool:
        return decider.allowed(USERS[who], [resource], actions)

    assert allowed("reader", stats, read) and allowed("reader", ondemand, read)
    assert allowed("reader", services[OTHER_SERVICE], read)
    assert not allowed("reader", stats, write) and not allowed("reader", stats, offline)
    assert allowed("writer", stats, read) and allowed("writer", stats, write)
    # Offline pushes: the Postgres offline store cannot take them.
    assert not allowed("writer", stats, [AuthzedAction.WRITE_OFFLINE])
    assert allowed("training", stats, offline) and not allowed("training", stats, read)
    # The restricted service: its own role only.
    assert not allowed("reader", services[SERVICE], read)
    assert not allowed("writer", services[SERVICE], read)
    assert allowed("fraud-v1", services[SERVICE], read)
    assert not allowed("fraud-v1", services[OTHER_SERVICE], read)
    for who in ("reader", "writer", "training", "fraud-v1"):
        assert allowed(who, stats, [AuthzedAction.DESCRIBE])
    assert not allowed("stranger", stats, [AuthzedAction.DESCRIBE])
    assert not allowed("no-roles", stats, read)


def test_require_answers_403_naming_the_resource_not_the_caller(store: FeatureStore) -> None:
    decider = AccessDecider(store, enforce=True)
    stats = store.get_feature_view("customer_stats")
    require(decider, USERS["writer"], [stats], [AuthzedAction.WRITE_ONLINE])
    with pytest.raises(HTTPError) as raised:
        require(decider, User("alice@example.com", [READER]), [stats], push_actions("online"))
    assert (raised.value.status, raised.value.error) == (403, "forbidden")
    assert "customer_stats" in raised.value.detail and "write_online" in raised.value.detail
    assert "alice" not in raised.value.detail


def test_no_auth_checks_nothing_as_feast_does(store: FeatureStore) -> None:
    # The stack runs with AUTH_TYPE=no_auth: Feast installs no security manager.
    assert store.config.auth_config.type == "no_auth"
    decider = AccessDecider(store)
    stats = store.get_feature_view("customer_stats")
    assert not decider.enforced
    assert decider.allowed(USERS["nobody"], [stats], [AuthzedAction.WRITE_ONLINE])


def test_a_registry_refresh_brings_permission_changes_to_the_decision(
    store: FeatureStore, stack: Stack, restore_permissions: None
) -> None:
    decider = AccessDecider(store, enforce=True)
    stats = store.get_feature_view("customer_stats")
    training, read = USERS["training"], [AuthzedAction.READ_ONLINE]
    assert not decider.allowed(training, [stats], read)
    # Another process (an apply) changes the registry.
    other = stack.store()
    other.registry.apply_permission(
        Permission(
            name="training-reads-online",
            types=[FeatureView],
            actions=read,
            policy=RoleBasedPolicy(roles=[TRAINING]),
        ),
        other.project,
    )
    store.refresh_registry()
    assert decider.allowed(training, [stats], read)
    # No permission at all: every caller with a name, nobody without one.
    set_permissions(other, [])
    store.refresh_registry()
    assert decider.permissions == []
    assert decider.allowed(USERS["stranger"], [stats], [AuthzedAction.DELETE])
    assert not decider.allowed(USERS["nobody"], [stats], read)


# --- Feast's feature server, driven in-process ---------------------------------------------


class _TokenIsUser(TokenParser):
    """The bearer token names one of USERS: Feast's app then decides for that identity."""

    async def user_details_from_access_token(self, access_token: str) -> User:
        return USERS[access_token]


async def _post(app: Any, path: str, body: dict[str, Any], token: str) -> int:
    data = json.dumps(body).encode()
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": data, "more_body": False}
        return {"type": "http.disconnect"}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
    }
    try:
        await app(scope, receive, send)
    except Exception:
        # Starlette re-raises what Feast's catch-all handler answered, for the server's log.
        assert status, "Feast's app failed without answering"
    return status


@pytest.fixture(scope="module")
def feast_app(store: FeatureStore) -> Iterator[Any]:
    """Feast's app with its security manager on, as `feast serve` under oidc sets it."""
    set_security_manager(SecurityManager(project=store.project, registry=store.registry))
    set_auth_manager(AuthManager(token_parser=_TokenIsUser(), token_extractor=RestTokenExtractor()))
    try:
        yield get_app(store, registry_ttl_sec=0)
    finally:
        no_security_manager()
        set_auth_manager(AllowAll())


def _push_body(to: str) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "push_source_name": "customer_txn_1h_push",
        "df": {
            "customer_id": [999_001],
            "n_txn_1h": [1],
            "sum_amount_1h": [12.5],
            "event_timestamp": [now],
            "created_timestamp": [now],
        },
        "to": to,
    }


READS: list[dict[str, Any]] = [
    {"feature_service": SERVICE},
    {"feature_service": OTHER_SERVICE},
    {"features": ["customer_stats:avg_purchase_30d"]},
    {"features": ["customer_stats:avg_purchase_30d", "merchant_stats:avg_rating"]},
    # An on-demand view: Feast also asserts its source view.
    {"features": ["transaction_vs_history:amount_to_avg_30d"]},
    {"features": ["customer_txn_1h:n_txn_1h", "transaction_vs_history:amount_over_avg_30d"]},
]


def test_feasts_feature_server_and_the_decider_agree_on_every_request(
    store: FeatureStore, feast_app: Any
) -> None:
    decider = AccessDecider(store, enforce=True)
    entities = {"customer_id": [1], "merchant_id": [1], "amount": [10.0]}
    cases: list[tuple[str, dict[str, Any], Any, list[AuthzedAction]]] = []
    for read in READS:
        resources = decider.read_resources(read.get("feature_service"), read.get("features", []))
        cases.append(
            (
                "/get-online-features",
                {"entities": entities, **read},
                resources,
                [AuthzedAction.READ_ONLINE],
            )
        )
    for to in ("online", "offline", "online_and_offline"):
        cases.append(
            (
                "/push",
                _push_body(to),
                decider.push_resources("customer_txn_1h_push"),
                push_actions(to),
            )
        )
    for name in ("customer_stats", "transaction_vs_history"):
        body = {"feature_view_name": name, "df": {"customer_id": [999_002]}}
        cases.append(
            (
                "/write-to-online-store",
                body,
                decider.write_resources(name),
                [AuthzedAction.WRITE_ONLINE],
            )
        )
    # The resources listed are Feast's: the service alone, or each view and each
    # on-demand view's sources.
    assert [r.name for r in decider.read_resources(SERVICE)] == [SERVICE]
    assert {r.name for r in decider.read_resources(None, READS[4]["features"])} == {
        "transaction_vs_history",
        "customer_stats",
    }
    assert [r.name for r in decider.push_resources("customer_txn_1h_push")] == ["customer_txn_1h"]

    async def run() -> list[tuple[str, str, Any, bool, bool]]:
        results = []
        for (path, body, resources, actions), (who, user) in itertools.product(
            cases, USERS.items()
        ):
            if not user.username:
                continue  # Feast's parser gives every token holder a name.
            status = await _post(feast_app, path, body, who)
            feast = status != 403
            ours = decider.allowed(user, resources, actions)
            results.append((path, who, body.get("to") or body.get("feature_service"), feast, ours))
        return results

    results = asyncio.run(run())
    for _path, _who, _what, feast, ours in results:
        _tally("feast feature server", feast, ours)
    assert [r for r in results if r[3] != r[4]] == []
    assert {r[3] for r in results} == {True, False}


# --- generated permission sets -----------------------------------------------------------------

ROLES = [READER, WRITER, TRAINING, FRAUD_V1]
GROUPS = ["ml", "payments"]
NAMESPACES = ["fraud", "serving"]
TYPES: list[Any] = [FeatureView, BatchFeatureView, OnDemandFeatureView, FeatureService, Entity]
TYPES += [DataSource, Project, Permission]
PATTERNS = [
    [],
    ["customer_.*"],
    [SERVICE],
    [f"(?!{SERVICE}$).*"],
    ["merchant_stats", "customer_txn_1h"],
    ["fraud_detection_v[0-9]+"],
]
GENERATED_USERS = [
    User("", []),
    User("u", []),
    User("u", [READER]),
    User("u", [WRITER, TRAINING]),
    User("u", [FRAUD_V1], groups=["ml"]),
    User("u", [], groups=["payments"], namespaces=["fraud"]),
    User("u", [], namespaces=["serving"]),
]
GENERATED_ACTIONS: list[list[AuthzedAction]] = [
    [AuthzedAction.READ_ONLINE],
    [AuthzedAction.DESCRIBE],
    [AuthzedAction.WRITE_ONLINE],
    [AuthzedAction.READ_OFFLINE],
    [AuthzedAction.READ_ONLINE, AuthzedAction.DESCRIBE],
    list(WRITE),
]


def _members(pool: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True)


policies: st.SearchStrategy[Policy] = st.one_of(
    _members(ROLES).map(lambda r: RoleBasedPolicy(roles=r)),
    _members(GROUPS).map(lambda g: GroupBasedPolicy(groups=g)),
    _members(NAMESPACES).map(lambda n: NamespaceBasedPolicy(namespaces=n)),
    st.tuples(_members(GROUPS), _members(NAMESPACES)).map(
        lambda gn: CombinedGroupNamespacePolicy(groups=gn[0], namespaces=gn[1])
    ),
)


@st.composite
def permission_sets(draw: Any) -> list[Permission]:
    count = draw(st.integers(min_value=0, max_value=4))
    return [
        Permission(
            name=f"generated-{i}",
            types=draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=3, unique=True)),
            name_patterns=draw(st.sampled_from(PATTERNS)),
            actions=draw(
                st.lists(st.sampled_from(ALL_ACTIONS), min_size=1, max_size=4, unique=True)
            ),
            policy=draw(policies),
            required_tags=draw(st.sampled_from([None, {"team": "fraud"}])),
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def shared_decider(store: FeatureStore) -> AccessDecider:
    return AccessDecider(store, enforce=True)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(permissions=permission_sets())
def test_generated_permission_sets_decide_as_feast(
    permissions: list[Permission],
    store: FeatureStore,
    shared_decider: AccessDecider,
    restore_permissions: None,
) -> None:
    set_permissions(store, permissions)
    store.refresh_registry()
    manager = SecurityManager(project=store.project, registry=store.registry)
    everything = objects(store)
    requests = [[r] for r in everything] + [
        list(shared_decider.read_resources(None, READS[5]["features"])),
        list(shared_decider.read_resources(SERVICE)),
        list(shared_decider.push_resources("customer_txn_1h_push")),
    ]
    mismatches = []
    for user, resources, actions in itertools.product(GENERATED_USERS, requests, GENERATED_ACTIONS):
        feast = feast_allows(manager, user, resources, actions)
        ours = shared_decider.allowed(user, resources, actions)
        _tally("generated permission sets", feast, ours)
        if feast != ours:
            mismatches.append((str(user), [r.name for r in resources], actions))
    assert mismatches == [], [str(p) for p in permissions]
