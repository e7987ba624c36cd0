"""Who may call the servers, as the chart renders it: the identity settings every pod
gets, and with auth.type kubernetes the ServiceAccounts, the Feast roles and the RBAC the
servers need, read back the way Feast's own Kubernetes token parser reads them."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from feast.permissions.auth.kubernetes_token_parser import KubernetesTokenParser
from feast.permissions.permission import Permission
from feast.permissions.policy import RoleBasedPolicy
from kubernetes.client import ApiClient
from rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    RenderError,
    container_env,
    containers,
    deep_merge,
    find,
    one,
    pod_template,
    render,
    rendered_scenario,
    secret_object,
    workloads,
)

from feature_platform.config import auth as auth_config
from feature_platform.config import environments

K8S = "ci/kubernetes-auth-values"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Every role feature_repo/permissions.py names.
FEAST_ROLES = {"feature-reader", "feature-writer", "training", "fraud-detection-v1"}
# The parts that check callers' tokens, and the jobs that call with their own.
TOKEN_CHECKERS = {"server", "registry", "offline", "ui"}
# the helm test pod sends its own token too
JOBS = {
    "materialize",
    "skew-check",
    "quality",
    "training-set",
    "registry-backup",
    "registry-restore",
    "test",
}


def _values(scenario: str) -> dict[str, Any]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in SCENARIOS[scenario]:
        defaults = deep_merge(defaults, yaml.safe_load(path.read_text()))
    return defaults


def _component(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def _given_secrets(scenario: str) -> list[dict[str, Any]]:
    """Every existingSecret the scenario names, as an operator would create it."""
    values = _values(scenario)
    given = []
    for part, key in (("postgres", "passwordKey"), ("redis", "passwordKey")):
        auth = values[part]["auth"]
        if auth["existingSecret"]:
            given.append(secret_object(auth["existingSecret"], {auth[key]: "x"}))
    for settings, key in ((values["server"]["write"], "tokenKey"),):
        if settings["existingSecret"]:
            given.append(secret_object(settings["existingSecret"], {settings[key]: "x" * 16}))
    read = values["skewCheck"]["serverAuth"]
    if read["existingSecret"]:
        given.append(secret_object(read["existingSecret"], {read["tokenKey"]: "x"}))
    return given


def _platform_containers(objects: Iterable[dict[str, Any]]) -> list[tuple[dict, dict, dict]]:
    """(workload, pod, container) for every container running `feature-platform`."""
    found = []
    for obj in workloads(objects):
        pod = pod_template(obj)
        for c in containers(pod):
            if c.get("command") == ["feature-platform"]:
                found.append((obj, pod, c))
    return found


def _feast_roles(objects: list[dict[str, Any]], sa_namespace: str, sa_name: str) -> set[str]:
    """The roles Feast's KubernetesTokenParser gives a ServiceAccount's caller, computed by
    its own get_roles over the rendered RoleBindings (what the API server would list in
    the release's namespace) instead of a live cluster."""
    api = ApiClient()
    bindings = [o for o in find(objects, "RoleBinding") if o["metadata"]["namespace"] == NAMESPACE]
    listed = api._ApiClient__deserialize(  # type: ignore[attr-defined]
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBindingList",
            "items": bindings,
        },
        "V1RoleBindingList",
    )

    class RenderedRbac:
        def list_namespaced_role_binding(self, namespace: str) -> Any:
            assert namespace == NAMESPACE, "Feast looks in the server's own namespace"
            return listed

    parser = object.__new__(KubernetesTokenParser)  # no cluster config to load
    parser.rbac_v1 = RenderedRbac()  # type: ignore[assignment]
    return set(
        parser.get_roles(
            current_namespace=NAMESPACE,
            service_account_namespace=sa_namespace,
            service_account_name=sa_name,
        )
    )


def _rules_of(objects: list[dict[str, Any]], sa_name: str) -> list[tuple[str, dict[str, Any]]]:
    """(scope, rule) for every RBAC rule bound to the release namespace's ServiceAccount."""
    roles = {(o["kind"], o["metadata"]["name"]): o for o in objects if o["kind"].endswith("Role")}
    granted = []
    for binding in objects:
        if binding["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": sa_name, "namespace": NAMESPACE}
        if subject not in binding["subjects"]:
            continue
        ref = binding["roleRef"]
        role = roles[(ref["kind"], ref["name"])]
        scope = "cluster" if binding["kind"] == "ClusterRoleBinding" else NAMESPACE
        granted += [(scope, rule) for rule in role.get("rules") or []]
    return granted


# --- every scenario ----------------------------------------------------------------------


def test_every_platform_pod_derives_the_feast_auth_block(scenario: str) -> None:
    """The platform accepts each pod's identity settings at start (AUTH_TYPE, OIDC_*,
    AUTH_ALLOW_NO_AUTH over the image's env file) and derives Feast's block of the
    chart's auth.type; no pod relies on the env file for any of them."""
    objects = rendered_scenario(scenario)
    values = _values(scenario)
    everything = objects + _given_secrets(scenario)
    env_file = environments.read_env_file(environments.ENV_DIR / f"{values['environment']}.env")
    found = _platform_containers(objects)
    assert found
    for _obj, _pod, c in found:
        env = container_env(c, everything)
        for name in ("AUTH_TYPE", "AUTH_ALLOW_NO_AUTH", *auth_config.OIDC_REQUIRED):
            assert name in env, f"{c['name']}: {name} would come from the image's env file"
        assert auth_config.INTRA_COMMUNICATION_VAR not in env
        block = yaml.safe_load(auth_config.feast_auth({**env_file, **env}))
        assert block["type"] == values["auth"]["type"], c["name"]
        if block["type"] == "oidc":
            oidc = values["auth"]["oidc"]
            assert block["audience"] == oidc["audience"] and block["issuer"] == oidc["issuer"]


def test_identity_objects_exactly_with_kubernetes_auth(scenario: str) -> None:
    objects = rendered_scenario(scenario)
    kubernetes = _values(scenario)["auth"]["type"] == "kubernetes"
    rbac = [o for o in objects if o["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
    rbac += [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    assert bool(rbac) == kubernetes
    for obj in workloads(objects):
        spec = pod_template(obj)["spec"]
        volumes = {v["name"] for v in spec.get("volumes", [])}
        assert spec["automountServiceAccountToken"] is False
        if not kubernetes:
            assert "serviceAccountName" not in spec, obj["metadata"]["name"]
            assert "service-account" not in volumes, obj["metadata"]["name"]


# --- kubernetes --------------------------------------------------------------------------


def test_servers_and_jobs_run_with_their_own_service_accounts() -> None:
    objects = rendered_scenario(K8S)
    accounts = {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    for sa in find(objects, "ServiceAccount"):
        assert sa["automountServiceAccountToken"] is False
    seen: dict[str, str] = {}
    for obj in workloads(objects):
        part = _component(obj)
        pod = pod_template(obj)
        spec = pod["spec"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        if part not in TOKEN_CHECKERS | JOBS:
            # The stores carry no identity and no token.
            assert "serviceAccountName" not in spec, part
            assert "service-account" not in volumes, part
            continue
        name = spec["serviceAccountName"]
        assert name in accounts, f"{part} runs as {name}, which is not rendered"
        assert name not in seen, f"{part} shares {name} with {seen.get(name)}"
        seen[name] = part
        projected = volumes["service-account"]["projected"]["sources"]
        (token,) = [s["serviceAccountToken"] for s in projected if "serviceAccountToken" in s]
        # No audience: the API server's own, which a TokenReview without audiences accepts.
        assert "audience" not in token and token["path"] == "token"
        assert 600 <= token["expirationSeconds"] <= 86400
        assert {"ca.crt", "namespace", "token"} <= {
            item["path"] for s in projected for item in next(iter(s.values())).get("items", [])
        } | {token["path"]}
        for c in containers(pod):
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            if c["name"] == "init-db":
                # Creating databases needs no identity.
                assert TOKEN_DIR not in mounts
                continue
            assert mounts[TOKEN_DIR]["name"] == "service-account"
            assert mounts[TOKEN_DIR]["readOnly"] is True
    assert set(seen.values()) == TOKEN_CHECKERS | JOBS


def _permission_roles() -> set[str]:
    """Every role a Permission of feature_repo/permissions.py names."""
    spec = importlib.util.spec_from_file_location(
        "permissions", ROOT / "feature_repo" / "permissions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    permissions = [v for v in vars(module).values() if isinstance(v, Permission)]
    assert permissions
    assert all(isinstance(p.policy, RoleBasedPolicy) for p in permissions)
    return {role for p in permissions for role in p.policy.roles}  # type: ignore[attr-defined]


def test_every_role_the_permissions_name_is_a_kubernetes_role() -> None:
    """A role with no Role could never be bound, and a caller could never hold it."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())["auth"]["kubernetes"]
    assert set(defaults["roles"]) == _permission_roles() == FEAST_ROLES
    rendered = {o["metadata"]["name"] for o in find(rendered_scenario(K8S), "Role")}
    assert rendered >= FEAST_ROLES


def test_feast_reads_each_callers_roles_from_the_rendered_bindings() -> None:
    """Feast's own role lookup over the rendered RoleBindings: the materialize job writes,
    the skew check reads, each client holds what values give it, and a ServiceAccount
    that nothing binds (or the right name in another namespace) holds nothing."""
    objects = rendered_scenario(K8S)
    full = "fp-feast-platform"
    assert _feast_roles(objects, NAMESPACE, f"{full}-materialize") == {"feature-writer"}
    # The skew check reads the one service only its own role may read.
    assert _feast_roles(objects, NAMESPACE, f"{full}-skew-check") == {
        "feature-reader",
        "fraud-detection-v1",
    }
    assert _feast_roles(objects, NAMESPACE, f"{full}-test") == {
        "feature-reader",
        "fraud-detection-v1",
    }
    assert _feast_roles(objects, "models", "fraud-scorer") == {"fraud-detection-v1"}
    assert _feast_roles(objects, NAMESPACE, "training-notebook") == {"training", "feature-reader"}
    assert _feast_roles(objects, NAMESPACE, "fraud-scorer") == set()
    assert _feast_roles(objects, NAMESPACE, "default") == set()
    # The servers' own lookup grant shows up as a role name no permission uses.
    assert _feast_roles(objects, NAMESPACE, f"{full}-server") == {f"{full}-role-lookup"}
    # The Feast roles exist as Roles of exactly those names and grant nothing in Kubernetes.
    feast_roles = {
        o["metadata"]["name"]: o
        for o in find(objects, "Role")
        if o["metadata"]["name"] in FEAST_ROLES
    }
    assert set(feast_roles) == FEAST_ROLES
    assert all(role["rules"] == [] for role in feast_roles.values())
    for binding in find(objects, "RoleBinding"):
        ref = binding["roleRef"]
        assert ref["kind"] == "Role"
        assert ref["name"] in {o["metadata"]["name"] for o in find(objects, "Role")}
    # A client created by the chart exists beside the release; one elsewhere is not made.
    accounts = {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    assert "training-notebook" in accounts and "fraud-scorer" not in accounts


def test_servers_get_token_reviews_and_role_lookups_and_nothing_else() -> None:
    """Least privilege: a token-checking server may create TokenReviews (cluster-scoped)
    and read the RoleBindings of its own namespace; the jobs and clients get no
    Kubernetes rule at all (their Feast roles are empty Roles)."""
    objects = rendered_scenario(K8S)
    expected = [
        ("cluster", {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"]}),
        (NAMESPACE, {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"]}),
    ]
    for obj in workloads(objects):
        part = _component(obj)
        if part not in TOKEN_CHECKERS | JOBS:
            continue
        rules = _rules_of(objects, pod_template(obj)["spec"]["serviceAccountName"])
        if part in JOBS:
            assert rules == [], part
            continue
        assert sorted(
            (scope, {k: rule[k] for k in ("apiGroups", "resources")}) for scope, rule in rules
        ) == sorted(expected), part
        verbs = {rule["resources"][0]: set(rule["verbs"]) for _, rule in rules}
        # The verifier (and Feast) call create_token_review and list_namespaced_role_binding.
        assert verbs == {"tokenreviews": {"create"}, "rolebindings": {"list"}}, part
        for _, rule in rules:
            assert "resourceNames" not in rule and "*" not in str(rule)
    for client in ("training-notebook",):
        assert _rules_of(objects, client) == []


def test_user_tokens_roles_need_the_cluster_wide_grant_asked_for() -> None:
    """A user's roles come from ClusterRoleBindings too: listing them cluster-wide is
    granted only when userRoles asks, and never to the jobs."""
    plain = rendered_scenario(K8S)
    objects = render(SCENARIOS[K8S], {"auth": {"kubernetes": {"userRoles": True}}})
    for rendered, expected in ((plain, set()), (objects, {"clusterrolebindings"})):
        full = "fp-feast-platform"
        granted = {r["resources"][0] for _, r in _rules_of(rendered, f"{full}-server")}
        assert granted - {"tokenreviews", "rolebindings"} == expected
        assert _rules_of(rendered, f"{full}-materialize") == []
    extra = [
        rule
        for _, rule in _rules_of(objects, "fp-feast-platform-server")
        if rule["resources"] == ["clusterrolebindings"]
    ]
    assert [rule["verbs"] for rule in extra] == [["list"]]


def test_cluster_scoped_grants_never_collide_between_releases() -> None:
    names = []
    for namespace in ("team-a", "team-b"):
        objects = render(SCENARIOS[K8S], namespace=namespace)
        for obj in objects:
            if obj["kind"] in ("ClusterRole", "ClusterRoleBinding"):
                assert namespace in obj["metadata"]["name"]
                names.append((obj["kind"], obj["metadata"]["name"]))
                for subject in obj.get("subjects", []):
                    assert subject["namespace"] == namespace
    assert len(names) == len(set(names)) == 4


def test_only_the_token_checkers_reach_the_api_server() -> None:
    objects = rendered_scenario(K8S)
    policy = one(objects, "NetworkPolicy", "-auth-egress")
    assert policy["spec"]["policyTypes"] == ["Egress"]
    selector = policy["spec"]["podSelector"]
    (expression,) = selector["matchExpressions"]
    assert expression["operator"] == "In"

    def selected(labels: dict[str, str]) -> bool:
        return selector["matchLabels"].items() <= labels.items() and (
            labels.get(expression["key"]) in expression["values"]
        )

    chosen = {
        _component(o) for o in workloads(objects) if selected(pod_template(o)["metadata"]["labels"])
    }
    assert chosen == TOKEN_CHECKERS
    (rule,) = policy["spec"]["egress"]
    assert {p["port"] for p in rule["ports"]} == {443, 6443}
    assert [peer["ipBlock"]["cidr"] for peer in rule["to"]] == _values(K8S)["auth"]["egress"][
        "cidrs"
    ]


def test_the_skew_check_sends_its_service_account_token() -> None:
    objects = rendered_scenario(K8S)
    cronjob = one(objects, "CronJob", "-skew-check")
    (c,) = pod_template(cronjob)["spec"]["containers"]
    env = container_env(c, objects)
    assert "SKEW_CHECK_SERVER_TOKEN" not in env
    token_file = env["SKEW_CHECK_SERVER_TOKEN_FILE"]
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert token_file.rsplit("/", 1)[0] in mounts


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        # a role a permission never names would be bound to nothing Feast checks
        ({"auth": {"kubernetes": {"materializeRoles": ["feature-admin"]}}}, "feature-admin"),
        (
            {
                "auth": {
                    "kubernetes": {
                        "clients": [
                            {
                                "name": "app",
                                "namespace": "apps",
                                "roles": ["training"],
                                "create": True,
                            }
                        ]
                    }
                }
            },
            "create it in apps yourself",
        ),
        # one mechanism at a time: the shared token is no_auth's
        ({"server": {"write": {"mode": "token"}}}, "server.write.mode token"),
        (
            {"skewCheck": {"serverAuth": {"existingSecret": "read-token"}}},
            "skewCheck.serverAuth.existingSecret",
        ),
        ({"auth": {"kubernetes": {"roles": ["Feature_Reader"]}}}, "Feature_Reader"),
    ],
)
def test_kubernetes_settings_that_cannot_work_are_refused(
    overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(RenderError, match=named):
        render(SCENARIOS[K8S], overrides)


# --- oidc and no_auth ----------------------------------------------------------------------

OIDC: dict[str, Any] = {
    "type": "oidc",
    "oidc": {
        "discoveryUrl": "https://sso.example.com:8443/realms/ml/.well-known/openid-configuration",
        "clientId": "feast",
        "audience": "feast-api",
        "issuer": "https://sso.example.com:8443/realms/ml",
    },
}


def test_oidc_settings_reach_every_pod_from_the_configmap() -> None:
    objects = render(SCENARIOS["dev"], {"auth": OIDC, "skewCheck": {"enabled": True}})
    settings = one(objects, "ConfigMap", "-settings")["data"]
    assert settings["AUTH_TYPE"] == "oidc"
    assert settings["AUTH_ALLOW_NO_AUTH"] == "false"
    assert settings["OIDC_DISCOVERY_URL"] == OIDC["oidc"]["discoveryUrl"]
    assert settings["OIDC_CLIENT_ID"] == "feast"
    assert settings["OIDC_AUDIENCE"] == "feast-api"
    assert settings["OIDC_ISSUER"] == "https://sso.example.com:8443/realms/ml"
    # Verifying tokens needs no secret and no Kubernetes identity.
    assert not [o for o in objects if o["kind"] in ("ServiceAccount", "Role", "ClusterRole")]
    policy = one(objects, "NetworkPolicy", "-auth-egress")
    (rule,) = policy["spec"]["egress"]
    assert [p["port"] for p in rule["ports"]] == [8443]
    names = set(policy["spec"]["podSelector"]["matchExpressions"][0]["values"])
    assert names == {"feast-platform-server"}, "only the feature server is enabled"


@pytest.mark.parametrize("missing", ["audience", "issuer", "discoveryUrl", "clientId"])
def test_oidc_without_audience_or_issuer_is_refused(missing: str) -> None:
    """Feast checks aud and iss only when they are set: the chart never leaves them out."""
    auth = deep_merge(OIDC, {"oidc": {missing: ""}})
    with pytest.raises(RenderError, match=missing):
        render(SCENARIOS["dev"], {"auth": auth})


def test_prod_refuses_no_auth_unless_told() -> None:
    with pytest.raises(RenderError, match=r"auth\.allowNoAuth"):
        render(SCENARIOS["prod"], {"auth": {"type": "no_auth"}})
    objects = render(SCENARIOS["prod"], {"auth": {"type": "no_auth", "allowNoAuth": True}})
    assert one(objects, "ConfigMap", "-settings")["data"]["AUTH_ALLOW_NO_AUTH"] == "true"
    assert not find(objects, "NetworkPolicy", "-auth-egress")
    prod = one(rendered_scenario("prod"), "ConfigMap", "-settings")["data"]
    assert prod["AUTH_TYPE"] == "oidc" and prod["AUTH_ALLOW_NO_AUTH"] == "false"
    assert urlsplit(prod["OIDC_DISCOVERY_URL"]).scheme == "https"
    dev = one(rendered_scenario("dev"), "ConfigMap", "-settings")["data"]
    assert dev["AUTH_TYPE"] == "no_auth" and dev["AUTH_ALLOW_NO_AUTH"] == "true"


def test_oidc_refuses_the_shared_write_token() -> None:
    with pytest.raises(RenderError, match=r"feature-writer role"):
        render(SCENARIOS["dev"], {"auth": OIDC, "server": {"write": {"mode": "token"}}})
