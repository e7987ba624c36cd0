"""The registry and offline servers' Deployments, Services, policies and the client file."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from rendering import (
    SCENARIOS,
    RenderError,
    container_env,
    find,
    one,
    pod_template,
    render,
    rendered_scenario,
)

from feature_platform.config import client as client_config

SCENARIO = "ci/thin-client-values"
PARTS = {"registry": "serve-registry", "offline": "serve-offline"}


@pytest.fixture(scope="module")
def thin() -> list[dict[str, Any]]:
    return rendered_scenario(SCENARIO)


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_server_runs_its_command_behind_probes(thin: list[dict], part: str) -> None:
    deployment = one(thin, "Deployment", f"-{part}")
    (container,) = pod_template(deployment)["spec"]["containers"]
    assert container["command"] == ["feature-platform"]
    assert container["args"][:2] == [PARTS[part], "dev"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(container["args"][container["args"].index("--port") + 1]) in ports.values()
    # The registry answers the gRPC health service; Flight has none, so its port.
    handler = "grpc" if part == "registry" else "tcpSocket"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe][handler]["port"] in ports.values(), probe
    if part == "registry":
        assert set(ports) == {"grpc", "http"}
        assert int(container["args"][container["args"].index("--rest-port") + 1]) == ports["http"]
    service = one(thin, "Service", f"-{part}")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize("part", sorted(PARTS))
def test_each_server_takes_calls_only_from_its_peers(thin: list[dict], part: str) -> None:
    deployment = one(thin, "Deployment", f"-{part}")
    policy = one(thin, "NetworkPolicy", f"-{part}")
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    (rule,) = policy["spec"]["ingress"]
    values = yaml.safe_load(SCENARIOS[SCENARIO][0].read_text())[f"{part}Server"]
    assert rule["from"] == values["ingressFrom"]
    (container,) = pod_template(deployment)["spec"]["containers"]
    assert {p["port"] for p in rule["ports"]} == {p["name"] for p in container["ports"]}
    egress = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert egress <= {53, 5432, 6379}, "DNS and the stores only"


def test_budgets_follow_the_replicas(thin: list[dict]) -> None:
    # registryServer runs two pods here, offlineServer one: a budget for the first only.
    assert find(thin, "PodDisruptionBudget", "-registry")
    assert not find(thin, "PodDisruptionBudget", "-offline")


def _service_address(objects: list[dict], part: str, port_name: str) -> str:
    service = one(objects, "Service", f"-{part}")
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == port_name]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"


def test_the_client_configmap_is_the_client_config_commands_file(thin: list[dict]) -> None:
    """One file, two writers: the chart's ConfigMap equals what the command prints for
    the rendered Services' addresses."""
    text = one(thin, "ConfigMap", "-client")["data"]["feature_store.yaml"]
    expected = client_config.for_environment(
        "dev",
        registry=_service_address(thin, "registry", "grpc"),
        offline=_service_address(thin, "offline", "flight"),
        online="http://" + _service_address(thin, "server", "http"),
        write_token_env="FEATURE_PLATFORM_WRITE_TOKEN",
    )
    assert yaml.safe_load(text) == expected.as_dict()
    assert text.splitlines()[:2] == expected.render().splitlines()[:2]


def test_the_client_configmap_takes_other_addresses() -> None:
    overrides = {
        "clientConfig": {
            "registryAddress": "registry.example.com:443",
            "offlineAddress": "flight.example.com:8815",
            "onlineUrl": "https://features.example.com/",
            "writeCredentialEnvVar": "",
        }
    }
    objects = render(SCENARIOS[SCENARIO], overrides)
    text = one(objects, "ConfigMap", "-client")["data"]["feature_store.yaml"]
    expected = client_config.for_environment(
        "dev",
        registry="registry.example.com:443",
        offline="flight.example.com:8815",
        online="https://features.example.com/",
    )
    assert yaml.safe_load(text) == expected.as_dict()
    assert yaml.safe_load(text)["auth"] == {"type": "no_auth"}


def test_rest_port_zero_serves_grpc_only() -> None:
    objects = render(SCENARIOS[SCENARIO], {"registryServer": {"restPort": 0}})
    (container,) = pod_template(one(objects, "Deployment", "-registry"))["spec"]["containers"]
    assert "--no-rest" in container["args"] and "--rest-port" not in container["args"]
    assert [p["name"] for p in one(objects, "Service", "-registry")["spec"]["ports"]] == ["grpc"]


@pytest.mark.parametrize("scenario", ["dev", "prod"])
def test_off_unless_enabled(scenario: str) -> None:
    names = {o["metadata"]["name"] for o in rendered_scenario(scenario)}
    assert not [n for n in names if n.endswith(("-registry", "-offline", "-client"))]


def _offline_pod(objects: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = pod_template(one(objects, "Deployment", "-offline"))
    (container,) = pod["spec"]["containers"]
    return pod, container


def _mounted(pod: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume mounted at `path`."""
    (name,) = [m["name"] for m in container["volumeMounts"] if m["mountPath"] == path]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == name]
    return volume


def test_the_offline_server_keeps_a_mirror_of_its_own_by_default(thin: list[dict]) -> None:
    """Each pod's mirror on an emptyDir of `ownMirror.sizeLimit`, copied whole before the
    pod listens: the startup probe waits `startupSeconds`. DuckDB's files under TMPDIR on
    an emptyDir of `workDirSize`; no claim."""
    pod, container = _offline_pod(thin)
    env = container_env(container, thin)
    assert env["OFFLINE_MIRROR_DIR"].startswith("/")
    assert _mounted(pod, container, env["OFFLINE_MIRROR_DIR"])["emptyDir"] == {"sizeLimit": "20Gi"}
    assert _mounted(pod, container, env["TMPDIR"])["emptyDir"] == {"sizeLimit": "4Gi"}
    assert env["OFFLINE_MIRROR_DIR"] != env["TMPDIR"]
    assert env["OFFLINE_MIRROR_REFRESH_SECONDS"] == "300"
    # gone with the pod: its places in the change log given up when it stops
    assert env["OFFLINE_MIRROR_RELEASE_AT_EXIT"] == "true"
    assert not [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    registry = pod_template(one(thin, "Deployment", "-registry"))["spec"]["containers"][0]
    assert registry["startupProbe"]["failureThreshold"] == 60


def test_the_offline_servers_own_mirror_can_live_on_a_claim() -> None:
    own = {"existingClaim": "offline-mirror", "startupSeconds": 1200}
    overrides = {"offlineServer": {"ownMirror": own, "mirrorRefreshSeconds": 0}}
    objects = render(SCENARIOS[SCENARIO], overrides)
    pod, container = _offline_pod(objects)
    env = container_env(container, objects)
    assert env["OFFLINE_MIRROR_REFRESH_SECONDS"] == "0"
    mounted = _mounted(pod, container, env["OFFLINE_MIRROR_DIR"])
    assert mounted["persistentVolumeClaim"] == {"claimName": "offline-mirror"}
    assert "OFFLINE_MIRROR_RELEASE_AT_EXIT" not in env, "a claim's mirror outlives the pod"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1200


def test_without_a_mirror_the_offline_server_reads_with_copy() -> None:
    """Rows read with COPY: no mirror directory (the image's env file names one of its
    own), no mirror volume, the usual startup probe."""
    objects = render(SCENARIOS[SCENARIO], {"offlineServer": {"ownMirror": {"enabled": False}}})
    pod, container = _offline_pod(objects)
    env = container_env(container, objects)
    assert env["OFFLINE_MIRROR_DIR"] == ""
    assert all(v["name"] != "mirror" for v in pod["spec"]["volumes"])
    assert container["startupProbe"]["failureThreshold"] == 60


def test_the_offline_server_can_share_the_training_sets_mirror() -> None:
    overrides = {
        "offlineServer": {"mirror": True, "workDirSize": "8Gi"},
        "trainingSet": {"enabled": True},
    }
    objects = render(SCENARIOS[SCENARIO], overrides)
    pod, container = _offline_pod(objects)
    env = container_env(container, objects)
    job = pod_template(one(objects, "CronJob", "-training-set"))
    (trainer,) = job["spec"]["containers"]
    # The same directory on the same claim as the CronJob's: one mirror, no whole copies.
    assert env["OFFLINE_MIRROR_DIR"] == container_env(trainer, objects)["OFFLINE_MIRROR_DIR"]
    assert "OFFLINE_MIRROR_RELEASE_AT_EXIT" not in env, "the training job's places stay"
    assert env["OFFLINE_MIRROR_REFRESH_SECONDS"] == "300"
    mount = env["OFFLINE_MIRROR_DIR"].rsplit("/", 1)[0]
    claim = one(objects, "PersistentVolumeClaim", "-training-set")["metadata"]["name"]
    assert _mounted(pod, container, mount)["persistentVolumeClaim"] == {"claimName": claim}
    assert _mounted(job, trainer, mount)["persistentVolumeClaim"] == {"claimName": claim}
    assert _mounted(pod, container, env["TMPDIR"])["emptyDir"] == {"sizeLimit": "8Gi"}
    # The shared mirror replaces the pod's own.
    assert not [v for v in pod["spec"]["volumes"] if v["name"] == "mirror"]


def test_the_offline_servers_mirror_needs_the_training_set() -> None:
    with pytest.raises(RenderError, match=r"offlineServer.mirror .* trainingSet.enabled"):
        render(SCENARIOS[SCENARIO], {"offlineServer": {"mirror": True}})
