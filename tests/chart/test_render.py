"""The chart renders with a real Helm engine for every scenario, lints clean, and every
object it renders is valid Kubernetes."""

from __future__ import annotations

import re
from typing import Any

import kubernetes_validate
import pytest
import yaml
from rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    SCENARIOS,
    RenderError,
    lint,
    one,
    platform_job,
    render,
    render_templates,
    rendered_scenario,
)

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion, CronJob timeZone GA)
# and the newest schema kubernetes-validate ships.
KUBERNETES_VERSIONS = ["1.27.0", kubernetes_validate.utils.latest_version()]
FEATURE_STORE_YAML = ROOT / "feature_repo" / "feature_store.yaml"


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_is_clean(name: str) -> None:
    assert lint(SCENARIOS[name]) == []


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(objects: list[dict[str, Any]], version: str) -> None:
    errors = []
    for obj in objects:
        if obj["kind"] in ("ServiceMonitor", "PrometheusRule", "Certificate", "ScaledObject"):
            # CRDs: checked by test_service_monitor_scrapes_the_server, test_monitoring,
            # test_autoscaling_chart
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    assert errors == []


def test_ci_apply_job_validates_strictly() -> None:
    """The Job the kind tier (and CI) builds from the server pod to load data and apply."""
    deployment = one(rendered_scenario("dev"), "Deployment")
    job = platform_job(deployment, "ci-apply", ["feast", "dev", "--", "apply"])
    for version in KUBERNETES_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)


def test_service_monitor_scrapes_the_server() -> None:
    objects = rendered_scenario("prod")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service", "-server")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [NAMESPACE]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_service_monitor_is_off_by_default() -> None:
    assert not [o for o in render(SCENARIOS["dev"]) if o["kind"] == "ServiceMonitor"]


def test_feature_store_configmap_is_the_repository_file() -> None:
    """No copy to drift: the chart's file is a link to feature_repo/feature_store.yaml and
    the ConfigMap carries that file's text exactly."""
    link = CHART / "files" / "feature_store.yaml"
    assert link.is_symlink(), "the chart must link to the repository's file, not copy it"
    assert link.resolve() == FEATURE_STORE_YAML.resolve()
    cm = one(rendered_scenario("dev"), "ConfigMap", "-feature-store")
    assert cm["data"]["feature_store.yaml"] + "\n" == FEATURE_STORE_YAML.read_text()


def test_one_resource_per_template() -> None:
    templates = render_templates(SCENARIOS["ci/autoscaling-values"])
    for name, text in templates.items():
        if name.endswith("NOTES.txt"):
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        assert len(docs) <= 1, f"{name} renders {len(docs)} objects"


def test_notes_show_a_one_off_materialization() -> None:
    templates = render_templates(SCENARIOS["dev"])
    notes = next(text for name, text in templates.items() if name.endswith("NOTES.txt"))
    cronjob = one(rendered_scenario("dev"), "CronJob")
    assert f"kubectl -n {NAMESPACE} create job --from=cronjob/{cronjob['metadata']['name']} " in (
        notes
    )


def test_external_stores_need_existing_secrets() -> None:
    prod = yaml.safe_load(SCENARIOS["prod"][0].read_text())
    prod["postgres"]["auth"]["existingSecret"] = ""
    with pytest.raises(RenderError, match=r"postgres\.auth\.existingSecret is required"):
        render(overrides=prod)
    prod = yaml.safe_load(SCENARIOS["prod"][0].read_text())
    prod["redis"]["host"] = ""
    with pytest.raises(RenderError, match=r"redis\.host is required"):
        render(overrides=prod)


def test_digest_pins_every_platform_image() -> None:
    digest = "sha256:" + "0" * 64
    for obj in rendered_scenario("ci/autoscaling-values"):
        spec = obj.get("spec", {})
        for text in re.findall(r"image: (\S+)", yaml.safe_dump(spec)):
            if "feature-platform" in text:
                assert text == f"feature-platform@{digest}"


def test_cluster_objects_enforce_restricted_pod_security() -> None:
    namespaces = list(yaml.safe_load_all((ROOT / "k8s" / "namespaces.yaml").read_text()))
    assert {n["metadata"]["name"] for n in namespaces} >= {"feast-dev", "feast-prod"}
    for namespace in namespaces:
        assert namespace["kind"] == "Namespace", "k8s/ holds cluster-level objects only"
        kubernetes_validate.validate(namespace, KUBERNETES_VERSIONS[-1], strict=True)
        labels = namespace["metadata"]["labels"]
        for mode in ("enforce", "audit", "warn"):
            assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    kind = yaml.safe_load((ROOT / "k8s" / "kind-cluster.yaml").read_text())
    assert kind["apiVersion"] == "kind.x-k8s.io/v1alpha4" and kind["kind"] == "Cluster"
    assert "control-plane" in [node["role"] for node in kind["nodes"]]
