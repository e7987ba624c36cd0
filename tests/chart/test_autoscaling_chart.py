"""Saturation in the chart: the bound on requests in flight reaches every server pod's
settings, the CPU HorizontalPodAutoscaler stays the default, and `autoscaling.keda` swaps
it for a KEDA ScaledObject whose query is the share of the bound in use.

KEDA's CRDs are not among kubernetes-validate's schemas: every object of KEDA's kinds the
chart renders is validated against KEDA's own CRD schemas (`keda/`: the npm package
@kubernetes-models/keda, its validators generated from them), its structure is checked
here field by field as KEDA reads it (its trigger metadata is a map of strings), and its
PromQL by the real `promtool`, evaluated over input series of two releases.
tests/integration/serving/test_saturation.py checks that a running server exports the
series the query reads.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring import metric_names
from rendering import (
    CHART,
    NAMESPACE,
    SCENARIOS,
    RenderError,
    containers,
    find,
    one,
    pod_template,
    render,
    rendered_scenario,
)

KEDA = "ci/keda-values"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH: `make test-tools` installs Debian's prometheus"
)
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
KEDA_SCHEMAS = Path(__file__).parent / "keda"
NODE = shutil.which("node")
needs_keda_schemas = pytest.mark.skipif(
    NODE is None or not (KEDA_SCHEMAS / "node_modules").is_dir(),
    reason="node or KEDA's schemas missing: `make test-tools` installs them",
)


def _scenario_values(name: str) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(SCENARIOS[name][0].read_text())
    return values


def _scaled_object() -> dict[str, Any]:
    return one(rendered_scenario(KEDA), "ScaledObject")


def _in_flight_trigger(scaled: dict[str, Any]) -> dict[str, Any]:
    (trigger,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus"]
    return dict(trigger)


def test_the_bound_reaches_the_server(scenario: str, objects: list[dict[str, Any]]) -> None:
    settings = one(objects, "ConfigMap", "-settings")
    (server,) = [c for c in containers(pod_template(one(objects, "Deployment", "-server")))
                 if c["name"] == "server"]  # fmt: skip
    assert {"configMapRef": {"name": settings["metadata"]["name"]}} in server["envFrom"]
    for key, name in (("maxInFlight", "MAX_IN_FLIGHT"), ("maxQueueWaitMs", "MAX_QUEUE_WAIT_MS")):
        expected = _scenario_values(scenario).get("server", {}).get(key, DEFAULTS["server"][key])
        assert settings["data"][f"FEATURE_SERVER_{name}"] == str(expected)


def test_the_bound_is_on_by_default_and_can_be_turned_off() -> None:
    assert DEFAULTS["server"]["maxInFlight"] > 0
    off = render(SCENARIOS["dev"], {"server": {"maxInFlight": 0}})
    assert one(off, "ConfigMap", "-settings")["data"]["FEATURE_SERVER_MAX_IN_FLIGHT"] == "0"
    with pytest.raises(RenderError, match="maxInFlight"):
        render(SCENARIOS["dev"], {"server": {"maxInFlight": -1}})
    assert DEFAULTS["server"]["maxQueueWaitMs"] > 0
    with pytest.raises(RenderError, match="maxQueueWaitMs"):
        render(SCENARIOS["dev"], {"server": {"maxQueueWaitMs": -1}})


def test_cpu_autoscaling_stays_the_default() -> None:
    assert DEFAULTS["autoscaling"]["keda"]["enabled"] is False
    for name in ("prod", "ci/autoscaling-values"):
        objects = rendered_scenario(name)
        hpa = one(objects, "HorizontalPodAutoscaler")
        assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
        assert not find(objects, "ScaledObject")
    assert not find(rendered_scenario("dev"), "ScaledObject")


def test_the_scaled_object_replaces_the_hpa_and_scales_the_server() -> None:
    objects = rendered_scenario(KEDA)
    values = _scenario_values(KEDA)["autoscaling"]
    scaled = _scaled_object()
    deployment = one(objects, "Deployment", "-server")
    assert not find(objects, "HorizontalPodAutoscaler"), "KEDA makes its own; two would fight"
    assert "replicas" not in deployment["spec"]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["metadata"]["namespace"] == NAMESPACE
    assert scaled["metadata"]["labels"] == deployment["metadata"]["labels"]
    spec = scaled["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (
        values["minReplicas"],
        values["maxReplicas"],
    )
    assert spec["pollingInterval"] == DEFAULTS["autoscaling"]["keda"]["pollingIntervalSeconds"]
    assert set(spec) == {
        "scaleTargetRef",
        "pollingInterval",
        "minReplicaCount",
        "maxReplicaCount",
        "advanced",
        "triggers",
    }
    for trigger in spec["triggers"]:
        assert set(trigger) == {"type", "name", "metricType", "metadata"}
        # KEDA's CRD: trigger metadata is a map of strings, nothing else
        assert all(isinstance(v, str) for v in trigger["metadata"].values()), trigger["name"]
    in_flight = _in_flight_trigger(scaled)
    # Value: replicas = current replicas * (share in use / target), as CPU utilization
    assert in_flight["metricType"] == "Value"
    assert in_flight["metadata"]["serverAddress"] == values["keda"]["prometheusUrl"]
    assert float(in_flight["metadata"]["threshold"]) == values["keda"]["targetInFlightRatio"]
    (cpu,) = [t for t in spec["triggers"] if t["type"] == "cpu"]
    assert cpu["metricType"] == "Utilization"
    target = DEFAULTS["autoscaling"]["targetCPUUtilizationPercentage"]
    assert cpu["metadata"]["value"] == str(target)
    # KEDA's CPU scaler needs the named container, with a CPU request
    (server,) = [c for c in containers(pod_template(deployment)) if c["name"] == "server"]
    assert cpu["metadata"]["containerName"] == server["name"]
    assert server["resources"]["requests"]["cpu"]


def test_the_query_reads_what_the_server_exports() -> None:
    query = _in_flight_trigger(_scaled_object())["metadata"]["query"]
    assert metric_names(query) == {
        "feature_server_in_flight_requests",
        "feature_server_max_in_flight_requests",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server": {"maxInFlight": 0}}, "set server.maxInFlight above 0"),
        ({"autoscaling": {"keda": {"prometheusUrl": ""}}}, "prometheusUrl is required"),
        ({"autoscaling": {"enabled": False}}, "needs autoscaling.enabled"),
        ({"autoscaling": {"keda": {"targetInFlightRatio": 0}}}, "targetInFlightRatio"),
        ({"autoscaling": {"keda": {"window": "2 minutes"}}}, "window"),
        ({"autoscaling": {"keda": {"authentication": {"name": "prom"}}}}, "modes is required"),
        ({"autoscaling": {"keda": {"authentication": {"name": "p", "modes": "oauth"}}}}, "modes"),
        ({"autoscaling": {"keda": {"authentication": {"kind": "Secret"}}}}, "kind"),
    ],
)
def test_keda_values_that_cannot_work_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(RenderError, match=message):
        render(SCENARIOS[KEDA], change)


def test_a_prometheus_behind_credentials_is_asked_through_a_trigger_authentication() -> None:
    """Without a name the trigger carries no reference (the shipped scenario, above);
    with one, KEDA reads the credentials from the named object, used as `modes` says."""
    auth = {"name": "prometheus-reader", "kind": "ClusterTriggerAuthentication", "modes": "bearer"}
    scaled = one(
        render(SCENARIOS[KEDA], {"autoscaling": {"keda": {"authentication": auth}}}), "ScaledObject"
    )
    trigger = _in_flight_trigger(scaled)
    assert trigger["authenticationRef"] == {"name": auth["name"], "kind": auth["kind"]}
    assert trigger["metadata"]["authModes"] == "bearer"
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    assert "authenticationRef" not in _in_flight_trigger(_scaled_object())


def _keda_schema_errors(objects: list[dict[str, Any]]) -> tuple[int, str]:
    """keda/validate.mjs over `objects`: its exit code (0 valid, 1 not) and what it said."""
    assert NODE
    done = subprocess.run(
        [NODE, "validate.mjs"],
        cwd=KEDA_SCHEMAS,
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


@needs_keda_schemas
def test_every_keda_object_the_chart_renders_is_valid_by_kedas_own_schema() -> None:
    auth = {"name": "prometheus-reader", "kind": "TriggerAuthentication", "modes": "basic"}
    renders = [rendered_scenario(name) for name in SCENARIOS]
    renders.append(render(SCENARIOS[KEDA], {"autoscaling": {"keda": {"authentication": auth}}}))
    objects = [o for objects in renders for o in objects if o["apiVersion"].startswith("keda.sh/")]
    assert len(objects) >= 2, "the KEDA scenario, with and without authentication"
    code, said = _keda_schema_errors(objects)
    assert code == 0, said


@needs_keda_schemas
def test_kedas_schema_refuses_a_scaled_object_keda_could_not_read() -> None:
    scaled = copy.deepcopy(_scaled_object())
    trigger = next(t for t in scaled["spec"]["triggers"] if t["type"] == "prometheus")
    trigger["metadata"]["threshold"] = float(trigger["metadata"]["threshold"])
    scaled["spec"]["minReplicaCount"] = str(scaled["spec"]["minReplicaCount"])
    code, said = _keda_schema_errors([scaled])
    assert code == 1, said
    assert "metadata/threshold must be string" in said
    assert "minReplicaCount must be integer" in said


def _sample_at(eval_time: str, value: float) -> dict[str, Any]:
    return {
        "expr": "in_flight_share",
        "eval_time": eval_time,
        "exp_samples": [{"labels": "in_flight_share", "value": value}],
    }


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_query_is_the_share_of_the_bound_in_use_for_this_release(tmp_path: Path) -> None:
    """The query as a recording rule, evaluated by `promtool test rules`: two pods of this
    release (each two workers: the series are already summed per pod), one pod of another
    release in the same namespace that must not count."""
    query = _in_flight_trigger(_scaled_object())["metadata"]["query"]
    rules = {"groups": [{"name": "keda", "rules": [{"record": "in_flight_share", "expr": query}]}]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules, width=1000))
    job = one(rendered_scenario(KEDA), "Service", "-server")["metadata"]["name"]

    def series(name: str, pod: str, values: str, release_job: str = job) -> dict[str, str]:
        labels = f'namespace="{NAMESPACE}", job="{release_job}", pod="{pod}"'
        return {"series": f"{name}{{{labels}}}", "values": values}

    bound = 2 * 16  # two workers, server.maxInFlight 16
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "30s",
        "tests": [
            {
                "interval": "30s",
                "input_series": [
                    # pod a: 8 in flight throughout; pod b: 0, then 16 from its 5th scrape
                    series("feature_server_in_flight_requests", "a", "8x10"),
                    series("feature_server_in_flight_requests", "b", "0x3 16x6"),
                    series("feature_server_max_in_flight_requests", "a", f"{bound}x10"),
                    series("feature_server_max_in_flight_requests", "b", f"{bound}x10"),
                    # another release, saturated: not this one's business
                    series("feature_server_in_flight_requests", "c", "32x10", "other-server"),
                    series("feature_server_max_in_flight_requests", "c", "32x10", "other-server"),
                ],
                "promql_expr_test": [
                    # (8 + 0) / (32 + 32)
                    _sample_at("1m", 0.125),
                    # over the 2m window b's samples are all 16: (8 + 16) / 64
                    _sample_at("4m", 0.375),
                ],
            }
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, width=1000))
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
