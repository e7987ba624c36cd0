"""The feature quality CronJob (values quality.*): off unless enabled; on, a daily job whose
command line the platform's own parser takes, reading PostgreSQL only, writing its report to
a mounted directory (a claim the chart makes or names, else an emptyDir) and pushing to a
Pushgateway only when one is named; its NetworkPolicy lets it reach DNS, PostgreSQL and that
Pushgateway and nothing else; its alerts follow the values. The pod's command, run as a
local process against the test services, writes the report."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from monitoring import alert_names, rule_groups
from rendering import (
    CHART,
    SCENARIOS,
    RenderError,
    assert_external_postgres_egress,
    assert_reaches_dns_and_postgres_only,
    assert_settings_of_materialize,
    ci_load_steps,
    container_env,
    cronjob_container,
    deep_merge,
    find,
    local_command_with_claim,
    one,
    render,
    render_templates,
    rendered_scenario,
    secret_object,
    secret_values,
    stack_values,
    workloads,
)
from test_policy import SECRET_NAME
from test_render import KUBERNETES_VERSIONS

from feature_platform import cli

DEV = [CHART / "values-dev.yaml"]
MOUNT = "/var/lib/feature-platform/quality"
REPORT = f"{MOUNT}/quality-report.html"
PUSHGATEWAY = "http://pushgateway.monitoring.svc:9091"
ON: dict[str, Any] = {"quality": {"enabled": True}}
KEPT: dict[str, Any] = {"quality": {"enabled": True, "report": {"persistence": {"enabled": True}}}}
CLAIMED: dict[str, Any] = {"enabled": True, "existingClaim": "reports"}
PUSHING: dict[str, Any] = {"quality": {"enabled": True, "pushgatewayUrl": PUSHGATEWAY}}
ALERTS = {
    "FeaturePlatformFeatureDrifted",
    "FeaturePlatformQualityCheckFailed",
    "FeaturePlatformQualityCheckStale",
}


def _job(objects: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(CronJob, pod, container) of the quality job."""
    return cronjob_container(objects, "-quality")


def _ours(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"]["name"].endswith("-quality")]


def _notes(overrides: dict[str, Any] | None = None) -> str:
    return next(t for n, t in render_templates(DEV, overrides).items() if n.endswith("NOTES.txt"))


def _report_volume(pod: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    """The volume mounted where the report is written (read-write)."""
    (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == MOUNT]
    assert not mount.get("readOnly")
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    return volume


def _values(scenario: str) -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in SCENARIOS[scenario]:
        values = deep_merge(values, yaml.safe_load(path.read_text()))
    return values


def _quality_group(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [g for g in rule_groups(objects) if g["name"] == "feast-platform.quality"]


def test_off_by_default() -> None:
    assert _ours(render(DEV)) == []
    assert "quality" not in _notes()
    rules = render(DEV, {"prometheusRule": {"enabled": True}})
    assert _quality_group(rules) == []
    assert not alert_names(rule_groups(rules)) & ALERTS


def test_defaults_render_a_daily_job_writing_to_an_empty_dir() -> None:
    objects = render(DEV, ON)
    cronjob, pod, c = _job(objects)
    spec = cronjob["spec"]
    assert spec["schedule"] == "40 3 * * *" and spec["timeZone"] == "Etc/UTC"
    assert spec["suspend"] is False
    assert spec["concurrencyPolicy"] == "Forbid"
    job = spec["jobTemplate"]["spec"]
    # A failed attempt has pushed its failure already: no retry flaps the alert.
    assert job["activeDeadlineSeconds"] == 3600 and job["backoffLimit"] == 0
    assert pod["spec"]["restartPolicy"] == "Never"
    assert c["command"] == ["feature-platform"]
    assert c["args"] == [
        "quality", "dev", "--report", REPORT, "--current-hours", "24", "--baseline-days", "7"
    ]  # fmt: skip
    parsed = cli.parser().parse_args(c["args"])
    assert (parsed.command, parsed.env, parsed.report) == ("quality", "dev", Path(REPORT))
    assert (parsed.current_hours, parsed.baseline_days) == (24, 7)
    assert parsed.training_set is None and parsed.pushgateway is None

    env = container_env(c, objects)
    assert "QUALITY_PUSHGATEWAY_URL" not in env, "no Pushgateway named, none pushed to"
    # The stores' settings and secrets, as every platform container gets them.
    assert env["OFFLINE_DB"] and env["REGISTRY_DB"] and "POSTGRES_PASSWORD_FILE" in env
    assert env["FEATURE_STORE_YAML"] == "/etc/feast/feature_store.yaml"

    # The root filesystem is read-only: the report goes to a volume, gone with the pod.
    assert _report_volume(pod, c) == {"name": "report", "emptyDir": {"sizeLimit": "64Mi"}}
    assert find(objects, "PersistentVolumeClaim", "-quality") == []
    assert c["resources"] == {
        "requests": {"cpu": "500m", "memory": "1Gi"},
        "limits": {"cpu": "1", "memory": "2Gi"},
    }
    notes = _notes(ON)
    assert f"create job --from=cronjob/{cronjob['metadata']['name']} " in notes
    assert "the HTML report is not kept (quality.report.persistence)" in notes


def test_security_contexts_settings_and_checksum_are_the_chart_wide_ones() -> None:
    objects = render(DEV, ON)
    _, pod, c = _job(objects)
    assert_settings_of_materialize(objects, pod, c)


def test_no_secret_is_a_literal_of_its_environment() -> None:
    objects = render(DEV, {"quality": {**PUSHING["quality"], "report": KEPT["quality"]["report"]}})
    _, _, c = _job(objects)
    secrets = {v for s in find(objects, "Secret") for v in secret_values(s).values()}
    mounts = [m["mountPath"] for m in c["volumeMounts"]]
    for item in c["env"]:
        if item["name"].endswith("_FILE"):
            # where the secret is read from: a file of a mounted volume
            assert any(item["value"].startswith(f"{m}/") for m in mounts), item["name"]
        elif SECRET_NAME.search(item["name"]):
            assert set(item["valueFrom"]) == {"secretKeyRef"}, item["name"]
        else:
            assert item["value"] not in secrets, item["name"]
    assert not set(c["args"]) & secrets


def test_a_pushgateway_reaches_the_environment_and_the_policy() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    objects = render(DEV, {"quality": {**PUSHING["quality"], "pushgatewayPeers": peers}})
    _, _, c = _job(objects)
    assert container_env(c, objects)["QUALITY_PUSHGATEWAY_URL"] == PUSHGATEWAY
    assert "--pushgateway" not in c["args"], "the URL is a setting, not an argument"
    egress = one(objects, "NetworkPolicy", "-quality")["spec"]["egress"]
    (rule,) = [r for r in egress if {p["port"] for p in r["ports"]} == {9091}]
    assert rule == {"ports": [{"port": 9091, "protocol": "TCP"}], "to": peers}
    # No peers: any address, on the URL's port (https's own when it has none).
    https = {"quality": {"enabled": True, "pushgatewayUrl": "https://push.example.com"}}
    egress = one(render(DEV, https), "NetworkPolicy", "-quality")["spec"]["egress"]
    assert egress[-1] == {"ports": [{"port": 443, "protocol": "TCP"}]}


def test_the_policy_lets_it_reach_dns_and_postgres_only() -> None:
    objects = render(DEV, ON)
    _, pod, _ = _job(objects)
    assert_reaches_dns_and_postgres_only(objects, "-quality", pod)
    unrestricted = render(DEV, {**ON, "networkPolicy": {"enabled": False}})
    assert find(unrestricted, "NetworkPolicy", "-quality") == []


def test_external_postgres_is_reached_on_its_addresses() -> None:
    assert_external_postgres_egress(render(SCENARIOS["ci/external-values"], ON), "-quality")


def test_persistence_keeps_the_report_on_a_claim_the_chart_makes() -> None:
    objects = render(DEV, KEPT)
    _, pod, c = _job(objects)
    claim = one(objects, "PersistentVolumeClaim", "-quality")
    assert _report_volume(pod, c)["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert "storageClassName" not in claim["spec"], "empty means the cluster's default"
    # Only the newest report, which the next run writes again: not kept on uninstall.
    assert "helm.sh/resource-policy" not in (claim["metadata"].get("annotations") or {})
    notes = _notes(KEPT)
    assert f"The report is {REPORT} on claim {claim['metadata']['name']}" in notes

    sized = {"enabled": True, "size": "5Gi", "storageClassName": "fast-ssd",
             "accessModes": ["ReadWriteMany"]}  # fmt: skip
    claim = one(
        render(DEV, {"quality": {"enabled": True, "report": {"persistence": sized}}}),
        "PersistentVolumeClaim",
        "-quality",
    )
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


def test_an_existing_claim_is_used_and_none_is_made() -> None:
    persistence = {"enabled": True, "existingClaim": "reports"}
    objects = render(DEV, {"quality": {"enabled": True, "report": {"persistence": persistence}}})
    assert find(objects, "PersistentVolumeClaim", "-quality") == []
    _, pod, c = _job(objects)
    assert _report_volume(pod, c)["persistentVolumeClaim"] == {"claimName": "reports"}
    # Named but not enabled: the emptyDir still.
    persistence["enabled"] = False
    objects = render(DEV, {"quality": {"enabled": True, "report": {"persistence": persistence}}})
    _, pod, c = _job(objects)
    assert "emptyDir" in _report_volume(pod, c)


def test_windows_and_schedule_reach_the_command_line() -> None:
    overrides = {"quality": {"enabled": True, "currentHours": 6, "baselineDays": 28,
                             "schedule": "15 */6 * * *", "suspend": True}}  # fmt: skip
    cronjob, _, c = _job(render(DEV, overrides))
    assert cronjob["spec"]["schedule"] == "15 */6 * * *" and cronjob["spec"]["suspend"] is True
    parsed = cli.parser().parse_args(c["args"])
    assert (parsed.current_hours, parsed.baseline_days) == (6, 28)


def test_a_training_set_and_served_vectors_reach_the_command_line() -> None:
    """The model's training set as the reference, the served vectors' table as what is
    judged, kept to its days; by default neither, and nothing is deleted."""
    _, _, default = _job(render(DEV, ON))
    parsed = cli.parser().parse_args(default["args"])
    assert (parsed.training_set, parsed.served_vectors, parsed.keep_served_days) == (
        None, None, None,
    )  # fmt: skip
    overrides = {"quality": {"enabled": True, "trainingSet": "fraud-model-7",
                             "servedVectors": "postgresql:served_vectors"}}  # fmt: skip
    _, _, c = _job(render(DEV, overrides))
    parsed = cli.parser().parse_args(c["args"])
    assert (parsed.training_set, parsed.served_vectors, parsed.keep_served_days) == (
        "fraud-model-7", "postgresql:served_vectors", 30,
    )  # fmt: skip
    kept_all = deep_merge(overrides, {"quality": {"keepServedDays": 0}})
    _, _, c = _job(render(DEV, kept_all))
    assert cli.parser().parse_args(c["args"]).keep_served_days is None


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"currentHours": 0}, "currentHours"),
        # a directory would be the pod's own: the served vectors are a table the servers share
        ({"servedVectors": "/var/log/served"}, "servedVectors"),
        ({"keepServedDays": -1}, "keepServedDays"),
        ({"baselineDays": "7"}, "baselineDays"),
        ({"staleAfterHours": 0}, "staleAfterHours"),
        # without a scheme the NetworkPolicy cannot tell the port
        ({"pushgatewayUrl": "pushgateway:9091"}, "pushgatewayUrl"),
        ({"pushgateway": PUSHGATEWAY}, "pushgateway"),
        ({"schedule": ""}, "schedule"),
        ({"backoffLimit": -1}, "backoffLimit"),
        ({"report": {"persistence": {"size": "lots"}}}, "size"),
        ({"report": {"persistence": {"accessModes": ["ReadOnlyMany"]}}}, "accessModes"),
        ({"report": {"persistence": {"existingClaim": "Not_A_Name"}}}, "existingClaim"),
        ({"report": {"persistence": {"storageClass": "ssd"}}}, "storageClass"),
        ({"report": {"emptyDir": {}}}, "emptyDir"),
    ],
)
def test_the_schema_refuses_wrong_values(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=re.escape(named)):
        render(DEV, deep_merge(ON, {"quality": overrides}))


def test_the_longest_name_is_one_kubernetes_takes() -> None:
    """A CronJob name has at most 52 characters (its Jobs add 11); the prefix has 40."""
    cronjob, _, _ = _job(render(DEV, {**ON, "fullnameOverride": "x" * 40}))
    assert len(cronjob["metadata"]["name"]) <= 52
    release = "r" * 53
    cronjob, _, _ = _job(render(DEV, ON, release=release))
    assert len(cronjob["metadata"]["name"]) <= 52


@pytest.mark.parametrize("variant", ["defaults", "kept", "existing-claim", "pushing"])
def test_the_objects_validate_strictly(variant: str) -> None:
    overrides: dict[str, Any] = {
        "defaults": ON,
        "kept": KEPT,
        "existing-claim": deep_merge(KEPT, {"quality": {"report": {"persistence": CLAIMED}}}),
        "pushing": PUSHING,
    }[variant]
    new = _ours(render(DEV, overrides))
    assert {o["kind"] for o in new} >= {"CronJob", "NetworkPolicy"}
    assert ("PersistentVolumeClaim" in {o["kind"] for o in new}) == (variant == "kept")
    for version in KUBERNETES_VERSIONS:
        for obj in new:
            kubernetes_validate.validate(obj, version, strict=True)


def test_every_scenario_renders_it_as_its_values_say(scenario: str) -> None:
    """The scenario-wide checks (strict validation, checkov, the platform's policy, the
    identities) see the job wherever a scenario enables it, in the shape it asks for."""
    objects = rendered_scenario(scenario)
    values = _values(scenario)
    q = values["quality"]
    if not q["enabled"]:
        assert _ours(objects) == []
        return
    cronjob, pod, c = _job(objects)
    assert cronjob in workloads(objects)
    assert c["args"] == [
        "quality", values["environment"], "--report", REPORT,
        "--current-hours", str(q["currentHours"]), "--baseline-days", str(q["baselineDays"]),
    ]  # fmt: skip
    env = {item["name"]: item for item in c["env"]}
    if q["pushgatewayUrl"]:
        assert env["QUALITY_PUSHGATEWAY_URL"] == {
            "name": "QUALITY_PUSHGATEWAY_URL",
            "value": q["pushgatewayUrl"],
        }
    else:
        assert "QUALITY_PUSHGATEWAY_URL" not in env
    persistence = q["report"]["persistence"]
    volume = _report_volume(pod, c)
    assert ("persistentVolumeClaim" in volume) == persistence["enabled"]
    if values["networkPolicy"]["enabled"]:
        egress = one(objects, "NetworkPolicy", "-quality")["spec"]["egress"]
        allowed = {53, 5432, values["postgres"]["port"]}
        if q["pushgatewayUrl"]:
            allowed.add(urlsplit(q["pushgatewayUrl"]).port)
        assert {p["port"] for r in egress for p in r["ports"]} <= allowed


def test_the_scenarios_carry_each_shape() -> None:
    """A kept report of a named class (ci/quality-values), an emptyDir and a Pushgateway
    with the rules (ci/autoscaling-values), and its own identity (kubernetes auth)."""
    kept = rendered_scenario("ci/quality-values")
    claim = one(kept, "PersistentVolumeClaim", "-quality")
    assert claim["spec"]["storageClassName"] == "standard"
    _, _, c = _job(kept)
    assert c["args"][-4:] == ["--current-hours", "12", "--baseline-days", "14"]

    rules = rendered_scenario("ci/autoscaling-values")
    _, pod, c = _job(rules)
    assert "emptyDir" in _report_volume(pod, c)
    assert alert_names(rule_groups(rules)) >= ALERTS

    identities = rendered_scenario("ci/kubernetes-auth-values")
    name = _job(identities)[1]["spec"]["serviceAccountName"]
    assert one(identities, "ServiceAccount", "-quality")["metadata"]["name"] == name
    # It reads the databases and calls no server: no Feast role.
    subjects = [s["name"] for b in find(identities, "RoleBinding") for s in b["subjects"]]
    assert name not in subjects


def test_the_alerts_follow_the_values() -> None:
    """The group only with the job; its Pushgateway alerts only with a Pushgateway to read
    (a failed Job alerts without one); the threshold and where the scores are, from values."""
    alerting = {"prometheusRule": {"enabled": True}}
    groups = _quality_group(render(DEV, deep_merge(alerting, ON)))
    assert alert_names(groups) == {"FeaturePlatformQualityCheckFailed"}

    kept = deep_merge(KEPT, PUSHING)
    overrides = deep_merge(deep_merge(alerting, kept), {"quality": {"staleAfterHours": 30}})
    (group,) = _quality_group(render(DEV, overrides))
    rules = {r["alert"]: r for r in group["rules"]}
    assert set(rules) == ALERTS
    selector = 'job="feature_platform_quality", environment="dev"'
    assert rules["FeaturePlatformFeatureDrifted"]["expr"] == (
        f"feature_platform_feature_drifted{{{selector}}} == 1"
    )
    stale = " ".join(rules["FeaturePlatformQualityCheckStale"]["expr"].split())
    assert stale == (
        f"time() - feature_platform_quality_last_run_timestamp_seconds{{{selector}}} > 108000"
    )
    failed = rules["FeaturePlatformQualityCheckFailed"]["expr"]
    assert f"feature_platform_quality_success{{{selector}}} == 0" in failed
    assert 'owner_name="fp-feast-platform-quality"' in failed
    drifted = rules["FeaturePlatformFeatureDrifted"]["annotations"]
    assert drifted["summary"] == "Feature {{ $labels.view }}.{{ $labels.feature }} drifted"
    assert f"{REPORT} on claim fp-feast-platform-quality" in drifted["description"]
    assert "docs/quality.md" in drifted["description"]
    late = rules["FeaturePlatformQualityCheckStale"]["annotations"]
    assert "more than 30 hours" in late["description"]
    for rule in group["rules"]:
        assert rule["labels"] == {"severity": "warning"}


# --- the pod's command as a local process ------------------------------------------------

SIZES = ["--customers", "40", "--merchants", "6", "--days", "9", "--transactions", "250"]
# The password of the Secret an operator creates; the local PostgreSQL trusts and ignores it.
SECRET = "chart-pg-Secret-51c3"


@pytest.mark.integration
@pytest.mark.parametrize("kept", [False, True], ids=["empty-dir", "claim"])
def test_the_job_writes_the_report(tmp_path: Path, kept: bool) -> None:
    """The rendered container (args, env from its ConfigMaps and Secrets, the report's
    volume as a local directory) against this run's own databases: it exits 0, prints the
    JSON summary and writes the HTML report under the mount."""
    from stacks import make_stack

    stack = make_stack("dev", "quality_chart", tmp_path / "stack", {"POSTGRES_PASSWORD": SECRET})
    try:
        s = stack.settings()
        overrides = deep_merge(stack_values(s), KEPT if kept else ON)
        objects = render(SCENARIOS["ci/external-values"], overrides)
        objects += [
            secret_object("ci-postgres", {"password": SECRET}),
            secret_object("ci-redis", {"password": s["REDIS_PASSWORD"]}),
        ]
        for name, args in ci_load_steps("dev", SIZES):
            with stack.active():
                assert cli.main(args) == 0, name

        _, pod, c = _job(objects)
        # The claim or the emptyDir as a local directory, and the report's path in it.
        command, directory = local_command_with_claim(pod, c, objects, tmp_path / "pod", MOUNT)
        assert command.argv[command.argv.index("--report") + 1].startswith(str(directory))
        assert "QUALITY_PUSHGATEWAY_URL" not in command.env
        done = subprocess.run(
            command.argv, env=command.env, cwd=command.cwd, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        assert summary["features"] and all(f["current_rows"] for f in summary["features"])
        page = (directory / "quality-report.html").read_text()
        assert page.startswith("<!doctype html>") and "Feature drift" in page
        assert SECRET not in done.stdout + done.stderr + page
    finally:
        stack.close()
