"""The Feast UI's Deployment, Service, policy and budget (values ui.*)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from rendering import SCENARIOS, find, one, pod_template, render, rendered_scenario

SCENARIO = "ci/ui-values"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return rendered_scenario(SCENARIO)


def test_the_ui_runs_its_command_behind_probes(objects: list[dict]) -> None:
    deployment = one(objects, "Deployment", "-ui")
    pod = pod_template(deployment)
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["feature-platform"]
    assert container["args"] == ["ui", "dev", "--port", "8888"]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [("http", 8888)]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == 8888, probe
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["resources"]["limits"]["memory"] == "1Gi"
    service = one(objects, "Service", "-ui")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]


def test_the_ui_is_opened_only_from_its_peers(objects: list[dict]) -> None:
    deployment = one(objects, "Deployment", "-ui")
    policy = one(objects, "NetworkPolicy", "-ui")
    assert policy["spec"]["podSelector"] == deployment["spec"]["selector"]
    (rule,) = policy["spec"]["ingress"]
    values = yaml.safe_load(SCENARIOS[SCENARIO][0].read_text())["ui"]
    assert rule["from"] == values["ingressFrom"]
    assert [p["port"] for p in rule["ports"]] == ["http"]
    egress = {p["port"] for r in policy["spec"]["egress"] for p in r["ports"]}
    assert egress <= {53, 5432, 6379}, "DNS and the stores only"


def test_a_budget_above_one_replica_only(objects: list[dict]) -> None:
    budget = one(objects, "PodDisruptionBudget", "-ui")
    assert budget["spec"]["selector"] == one(objects, "Deployment", "-ui")["spec"]["selector"]
    assert not find(
        render(SCENARIOS[SCENARIO], {"ui": {"replicas": 1}}), "PodDisruptionBudget", "-ui"
    )


def test_another_port() -> None:
    rendered = render(SCENARIOS[SCENARIO], {"ui": {"port": 9000}})
    (container,) = pod_template(one(rendered, "Deployment", "-ui"))["spec"]["containers"]
    assert container["args"][-2:] == ["--port", "9000"]
    assert container["readinessProbe"]["httpGet"]["port"] == 9000
    assert one(rendered, "Service", "-ui")["spec"]["ports"][0]["port"] == 9000


@pytest.mark.parametrize("scenario", ["dev", "prod"])
def test_off_unless_enabled(scenario: str) -> None:
    assert not [o for o in rendered_scenario(scenario) if o["metadata"]["name"].endswith("-ui")]
