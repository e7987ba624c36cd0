"""What checkov does not check: the platform's own rules for every rendered scenario."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from rendering import (
    CHART,
    ROOT,
    SCENARIOS,
    STORE_CLIENT_LABEL,
    container_env,
    containers,
    deep_merge,
    find,
    image_config,
    mounted_files,
    one,
    pod_template,
    render,
    render_templates,
    rendered_scenario,
    selects,
    workloads,
)

from feature_platform.config import auth as auth_config
from feature_platform.config.guard import referenced_variables

# FEAST_AUTH is derived by the platform from AUTH_TYPE and OIDC_* at every start
# (test_identities checks the pods' settings derive it).
FEATURE_STORE_VARIABLES = [
    name
    for name in referenced_variables((ROOT / "feature_repo" / "feature_store.yaml").read_text())
    if name != auth_config.FEAST_AUTH_VAR
]
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_?KEY|PRIVATE", re.I)
# Kinds with no namespace: the TokenReview grant of kubernetes auth.
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
SELECTOR_KEYS = {"app.kubernetes.io/name", "app.kubernetes.io/instance"}
PLATFORM_COMMANDS = {"serve", "materialize", "init-db"}


def _platform_containers(objects: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """(pod, container) for every container that runs `feature-platform <command>`."""
    found = []
    for obj in workloads(objects):
        pod = pod_template(obj)
        for c in containers(pod):
            if c.get("command") == ["feature-platform"]:
                found.append((pod, c))
    return found


def _selector(obj: dict[str, Any]) -> dict[str, str]:
    spec = obj["spec"]
    labels = spec["selector"] if obj["kind"] == "Service" else spec["selector"]["matchLabels"]
    return dict(labels)


def _secret_referenced(objects: list[dict[str, Any]], values: dict, name: str) -> bool:
    rendered = {o["metadata"]["name"] for o in find(objects, "Secret")}
    named = {
        values.get("postgres", {}).get("auth", {}).get("existingSecret"),
        values.get("redis", {}).get("auth", {}).get("existingSecret"),
        values.get("server", {}).get("write", {}).get("existingSecret"),
        values.get("skewCheck", {}).get("serverAuth", {}).get("existingSecret"),
    }
    return name in rendered or name in named


def test_every_pod_is_restricted(objects: list[dict[str, Any]]) -> None:
    for obj in workloads(objects):
        pod = pod_template(obj)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        spec = pod["spec"]
        assert spec["automountServiceAccountToken"] is False, where
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert "hostNetwork" not in spec and "hostPID" not in spec, where
        writable = {
            m["mountPath"]
            for c in containers(pod)
            for m in c.get("volumeMounts", [])
            if not m.get("readOnly")
        }
        for c in containers(pod):
            sc = c["securityContext"]
            at = f"{where} container {c['name']}"
            assert sc["allowPrivilegeEscalation"] is False, at
            assert sc["readOnlyRootFilesystem"] is True, at
            assert sc["runAsNonRoot"] is True, at
            assert sc["capabilities"]["drop"] == ["ALL"], at
            assert "add" not in sc["capabilities"], at
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", at
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= c["resources"][kind].keys(), at
        # A read-only root needs a writable /tmp for Python, gunicorn and libraries.
        assert "/tmp" in writable, where


def test_pods_run_as_the_image_user(objects: list[dict[str, Any]]) -> None:
    uid, gid = (int(x) for x in image_config().user.split(":"))
    assert uid >= 10000
    for pod, c in _platform_containers(objects):
        assert pod["spec"]["securityContext"]["runAsUser"] == uid
        assert c["securityContext"]["runAsUser"] == uid
        assert c["securityContext"]["runAsGroup"] == gid


def test_server_rollout_and_probes(scenario: str, objects: list[dict[str, Any]]) -> None:
    deployment = one(objects, "Deployment", "-server")
    spec = deployment["spec"]
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert spec["strategy"]["rollingUpdate"]["maxSurge"] >= 1
    scalers = find(objects, "HorizontalPodAutoscaler") + find(objects, "ScaledObject")
    assert ("replicas" in spec) == (not scalers), "replicas omitted exactly when autoscaled"
    assert len(scalers) <= 1, "one autoscaler per Deployment: two would fight"
    if scalers:
        assert scalers[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]

    pod = spec["template"]["spec"]
    (server,) = [c for c in pod["containers"] if c["name"] == "server"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = server[probe]["httpGet"]
        assert http["port"] in ports or http["port"] in ports.values()
        paths[probe] = http["path"]
    # Liveness must not restart pods for a Redis or PostgreSQL outage.
    assert paths["livenessProbe"] == "/health"
    assert paths["startupProbe"] == "/health"
    assert paths["readinessProbe"] == "/ready"

    env = container_env(server, objects + _given_secrets(scenario, objects))
    assert int(env["FEATURE_SERVER_PORT"]) in ports.values()
    assert env["FEATURE_SERVER_HOST"] == "0.0.0.0"
    # No periodic worker recycling unless a scenario asks for it (none does).
    assert env["FEATURE_SERVER_MAX_REQUESTS"] == "0"
    # The pod outlives the preStop sleep plus the server's drain and graceful shutdown.
    sleep = int(server["lifecycle"]["preStop"]["exec"]["command"][1])
    assert server["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    drain = int(env["FEATURE_SERVER_DRAIN_SECONDS"])
    graceful = int(env["FEATURE_SERVER_GRACEFUL_TIMEOUT_SECONDS"])
    assert sleep >= 1 and drain >= 1
    assert pod["terminationGracePeriodSeconds"] > sleep + drain + graceful


def test_every_integer_setting_is_an_integer(objects: list[dict[str, Any]]) -> None:
    """Helm turns large numbers into float notation (1.048576e+06) unless told not to."""
    settings = one(objects, "ConfigMap", "-settings")["data"]
    integers = [k for k in settings if re.search(r"PORT|WORKERS|SECONDS|MAX_|REDIS_DB", k)]
    assert len(integers) >= 10
    for name in integers:
        if name != "FEATURE_SERVER_STORE_TIMEOUT_SECONDS":
            assert re.fullmatch(r"\d+", settings[name]), f"{name}={settings[name]!r}"


def test_disruption_budget(scenario: str, objects: list[dict[str, Any]]) -> None:
    pdbs = find(objects, "PodDisruptionBudget")
    # the fewest replicas an autoscaler keeps, by the Deployment it scales
    floors = {o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicas"]
              for o in find(objects, "HorizontalPodAutoscaler")}  # fmt: skip
    floors |= {o["spec"]["scaleTargetRef"]["name"]: o["spec"]["minReplicaCount"]
               for o in find(objects, "ScaledObject")}  # fmt: skip
    budgeted = []
    # Every Deployment: the feature server's, and the registry and offline servers'.
    for deployment in find(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        replicas = floors[name] if name in floors else deployment["spec"]["replicas"]
        budgets = [p for p in pdbs if _selector(p) == _selector(deployment)]
        budgeted += budgets
        if replicas > 1:
            assert len(budgets) == 1, f"{deployment['metadata']['name']}: no disruption budget"
        for pdb in budgets:
            # A budget that allows no eviction blocks node drains for ever.
            if "maxUnavailable" in pdb["spec"]:
                assert pdb["spec"]["maxUnavailable"] not in (0, "0%")
            else:
                assert pdb["spec"]["minAvailable"] < replicas
    assert len(budgeted) == len(pdbs), "a budget selecting no Deployment"


def test_prod_has_autoscaling_budget_and_spread() -> None:
    objects = rendered_scenario("prod")
    assert find(objects, "HorizontalPodAutoscaler") and find(objects, "PodDisruptionBudget")
    spread = one(objects, "Deployment")["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in spread} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    assert not find(objects, "StatefulSet"), "prod uses managed Redis and PostgreSQL"


def test_materialization_cronjob(scenario: str, objects: list[dict[str, Any]]) -> None:
    cronjobs = find(objects, "CronJob", "-materialize")
    if scenario == "ci/minimal-values":
        assert cronjobs == []
        return
    (cronjob,) = cronjobs
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] >= 10
    assert spec["successfulJobsHistoryLimit"] >= 0
    assert spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    assert 0 <= job["backoffLimit"] <= 10
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")
    (c,) = pod["containers"]
    environment = yaml.safe_load(SCENARIOS[scenario][0].read_text())["environment"]
    # Its own pod, its own command: never `kubectl exec` into the server, never apply.
    assert c["command"] == ["feature-platform"]
    assert c["args"] == ["materialize", environment]


def test_skew_check_cronjob(scenario: str, objects: list[dict[str, Any]]) -> None:
    """Off unless enabled. On: its own pod against the release's Service, one run at a
    time and no retry, and NetworkPolicies that let it reach the server and Pushgateway."""
    values = deep_merge(
        yaml.safe_load((CHART / "values.yaml").read_text()),
        yaml.safe_load(SCENARIOS[scenario][0].read_text()),
    )
    settings = values["skewCheck"]
    cronjobs = find(objects, "CronJob", "-skew-check")
    if not settings["enabled"]:
        assert cronjobs == []
        return
    (cronjob,) = cronjobs
    spec = cronjob["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["startingDeadlineSeconds"] >= 10 and spec["failedJobsHistoryLimit"] >= 1
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] > 0
    # A retry that passes would hide the failed run.
    assert job["backoffLimit"] == 0
    pod = job["template"]
    (c,) = pod["spec"]["containers"]
    assert c["command"] == ["feature-platform"]
    assert c["args"] == ["skew-check", values["environment"], "--rows", str(settings["rows"])]
    assert pod["metadata"]["labels"][STORE_CLIENT_LABEL] == "true"
    env = container_env(c, objects + _given_secrets(scenario, objects))
    service = one(objects, "Service", "-server")
    (service_port,) = service["spec"]["ports"]
    scheme = "https" if values.get("tls", {}).get("enabled") else "http"
    assert env["SKEW_CHECK_SERVER_URL"] == (
        f"{scheme}://{service['metadata']['name']}:{service_port['port']}"
    )
    assert env.get("SKEW_CHECK_PUSHGATEWAY_URL", "") == settings["pushgatewayUrl"]
    assert ("SKEW_CHECK_SERVER_TOKEN" in env) == bool(settings["serverAuth"]["existingSecret"])
    name = f"{cronjob['metadata']['name']} "
    notes = next(t for n, t in render_templates(SCENARIOS[scenario]).items() if "NOTES" in n)
    assert f"create job --from=cronjob/{name}" in notes

    if not values["networkPolicy"]["enabled"]:
        return
    policies = find(objects, "NetworkPolicy")
    (policy,) = find(policies, "NetworkPolicy", "-skew-check")
    labels = pod["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in policy["spec"], "nothing calls the skew check"
    egress = policy["spec"]["egress"]
    deployment = one(objects, "Deployment", "-server")
    server_pod = pod_template(deployment)
    (server,) = [s for s in server_pod["spec"]["containers"] if s["name"] == "server"]
    (http,) = [p["containerPort"] for p in server["ports"] if p["name"] == "http"]
    assert any(
        {p["port"] for p in rule["ports"]} == {http}
        and any(selects(peer, server_pod["metadata"]["labels"]) for peer in rule.get("to", []))
        for rule in egress
    ), "the skew check cannot reach the server pods"
    for rule in one(policies, "NetworkPolicy", "-server")["spec"]["ingress"]:
        if "from" in rule:
            assert any(selects(peer, labels) for peer in rule["from"]), (
                "the server's ingress rule leaves the skew check out"
            )
    if settings["pushgatewayUrl"]:
        url = urlsplit(settings["pushgatewayUrl"])
        port = url.port or (443 if url.scheme == "https" else 80)
        (rule,) = [r for r in egress if {p["port"] for p in r["ports"]} == {port}]
        assert rule.get("to", []) == settings["pushgatewayPeers"]


def test_no_secret_in_any_configmap(objects: list[dict[str, Any]]) -> None:
    for cm in find(objects, "ConfigMap"):
        for key, value in cm["data"].items():
            assert not SECRET_NAME.search(key), f"{cm['metadata']['name']}: {key}"
            if key.endswith(".yaml"):
                # Any password-like setting in a mounted file is a ${VAR} reference.
                for line in value.splitlines():
                    m = re.match(r"\s*(\w*password\w*|\w*token\w*):\s*(.*)", line, re.I)
                    if m and m.group(1) == "token_env_var":
                        # The client file names the variable that holds the token.
                        assert re.fullmatch(r"[A-Za-z_]\w*", m.group(2)), line
                    elif m:
                        assert re.fullmatch(r'"?\$\{\w+\}"?', m.group(2)), line


def _given_secrets(scenario: str, objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The existingSecrets an operator creates before installing (their values unknown)."""
    from rendering import secret_object

    values = yaml.safe_load(SCENARIOS[scenario][0].read_text())
    given = []
    for part, key_name in (("postgres", "passwordKey"), ("redis", "passwordKey")):
        auth = values.get(part, {}).get("auth", {})
        if auth.get("existingSecret"):
            given.append(secret_object(auth["existingSecret"], {auth[key_name]: "x"}))
    write = values.get("server", {}).get("write", {})
    if write.get("existingSecret"):
        given.append(secret_object(write["existingSecret"], {write["tokenKey"]: "x" * 16}))
    read = values.get("skewCheck", {}).get("serverAuth", {})
    if read.get("existingSecret"):
        given.append(secret_object(read["existingSecret"], {read["tokenKey"]: "x"}))
    return given


def test_every_variable_of_feature_store_yaml_is_provided(
    scenario: str, objects: list[dict[str, Any]]
) -> None:
    """Every ${VAR} the mounted feature_store.yaml references is set in every platform
    container: the stores' passwords as files of a mounted Secret (`<VAR>_FILE`, which the
    kubelet updates in place when the Secret changes), the rest from the settings
    ConfigMap."""
    values = yaml.safe_load(SCENARIOS[scenario][0].read_text())
    everything = objects + _given_secrets(scenario, objects)
    found = _platform_containers(objects)
    assert {c["args"][0] for _, c in found} >= {"serve"}
    for pod, c in found:
        env = container_env(c, everything)
        files = mounted_files(pod, c, everything)
        missing = [
            v for v in FEATURE_STORE_VARIABLES if v not in env and env.get(f"{v}_FILE") not in files
        ]
        assert missing == [], f"{c['name']} lacks {missing}"
        for password in ("POSTGRES_PASSWORD", "REDIS_PASSWORD"):
            # never a variable, which keeps the value the pod started with
            assert password not in env and env[f"{password}_FILE"] in files, c["name"]
        assert env["FEATURE_STORE_YAML"] == "/etc/feast/feature_store.yaml"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/etc/feast" in mounts
        for item in c.get("env", []):
            if item["name"].endswith("_FILE") and "value" in item:
                # Where a secret is read from: a file of a mounted volume, never its value.
                assert any(item["value"].startswith(m + "/") for m in mounts), item
            elif SECRET_NAME.search(item["name"]):
                ref = item["valueFrom"]["secretKeyRef"]
                assert _secret_referenced(objects, values, ref["name"]), ref["name"]


def test_selectors_are_name_and_instance_and_never_overlap(objects: list[dict]) -> None:
    selecting = workloads(objects) + find(objects, "Service")
    pods = {
        f"{o['kind']}/{o['metadata']['name']}": pod_template(o)["metadata"]["labels"]
        for o in workloads(objects)
    }
    for obj in selecting:
        if obj["kind"] in ("Pod", "CronJob"):
            continue
        selector = _selector(obj)
        assert set(selector) == SELECTOR_KEYS, obj["metadata"]["name"]
        matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, f"{obj['kind']}/{obj['metadata']['name']} selects {matched}"


def test_every_object_is_labelled(objects: list[dict[str, Any]]) -> None:
    required = {
        "app.kubernetes.io/name",
        "app.kubernetes.io/instance",
        "app.kubernetes.io/version",
        "app.kubernetes.io/managed-by",
        "app.kubernetes.io/component",
        "app.kubernetes.io/part-of",
        "helm.sh/chart",
    }
    for obj in objects:
        assert required <= obj["metadata"]["labels"].keys(), obj["metadata"]["name"]
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in obj["metadata"], obj["metadata"]["name"]
        else:
            assert obj["metadata"]["namespace"] == "feast"


def test_config_checksum_rolls_exactly_on_config_change() -> None:
    def checksums(overrides: dict[str, Any]) -> list[str]:
        objs = render(SCENARIOS["dev"], overrides)
        return [
            pod_template(o)["metadata"]["annotations"]["checksum/config"]
            for o in workloads(objs)
            if o["kind"] in ("Deployment", "CronJob")
        ]

    base = checksums({})
    assert len(base) == 2
    assert checksums({"server": {"workers": 3}}) != base
    assert checksums({"redis": {"db": 5}}) != base
    assert checksums({"server": {"replicas": 3}}) == base


def test_store_access_is_limited_to_store_clients(scenario: str, objects: list[dict]) -> None:
    policies = find(objects, "NetworkPolicy")
    if scenario == "ci/minimal-values":
        assert policies == []
        return
    clients = {
        pod_template(o)["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in workloads(objects)
        if pod_template(o)["metadata"]["labels"].get(STORE_CLIENT_LABEL) == "true"
    }
    jobs = {
        o["metadata"]["labels"]["app.kubernetes.io/component"] for o in find(objects, "CronJob")
    }
    # The registry and offline servers read the registry and offline databases, the UI
    # the registry database.
    servers = {
        o["metadata"]["labels"]["app.kubernetes.io/component"]
        for o in find(objects, "Deployment")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] in ("registry", "offline", "ui")
    }
    assert clients == {"server"} | jobs | servers
    for store in ("redis", "postgres"):
        sts = find(objects, "StatefulSet", f"-{store}")
        if not sts:
            continue
        (policy,) = find(policies, "NetworkPolicy", f"-{store}")
        assert policy["spec"]["podSelector"]["matchLabels"] == _selector(sts[0])
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert "egress" not in policy["spec"], f"{store} needs to call nobody"
        (rule,) = policy["spec"]["ingress"]
        (peer,) = rule["from"]
        assert peer == {
            "podSelector": {
                "matchLabels": {"app.kubernetes.io/instance": "fp", STORE_CLIENT_LABEL: "true"}
            }
        }
    server_policy = one(policies, "NetworkPolicy", "-server")
    egress_ports = {p["port"] for rule in server_policy["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports <= {53, 5432, 6379}, "the server may call DNS and the stores only"
    for rule in server_policy["spec"]["egress"]:
        for peer in rule.get("to", []):
            assert peer.get("ipBlock", {}).get("cidr") != "0.0.0.0/0"


def test_store_images_are_official_and_pinned() -> None:
    for obj in find(rendered_scenario("dev"), "StatefulSet"):
        (c,) = pod_template(obj)["spec"]["containers"]
        name, _, tag = c["image"].partition(":")
        assert name in ("postgres", "redis")
        assert re.match(r"\d+\.\d+(\.\d+)?-", tag), c["image"]
        claim = obj["spec"]["volumeClaimTemplates"][0]
        assert claim["spec"]["resources"]["requests"]["storage"]


@pytest.mark.parametrize("scenario_name", ["dev", "ci/autoscaling-values"])
def test_generated_secrets_only_for_in_cluster_stores(scenario_name: str) -> None:
    names = {o["metadata"]["name"] for o in find(rendered_scenario(scenario_name), "Secret")}
    assert {"fp-feast-platform-redis", "fp-feast-platform-postgres"} <= names
    for name in ("prod", "ci/external-values"):
        assert find(rendered_scenario(name), "Secret") == []
