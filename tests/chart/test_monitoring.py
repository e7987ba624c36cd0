"""The PrometheusRule and the Grafana dashboard: off by default, valid PromQL by the real
`promtool`, and each alert firing when it should and silent when it should not.
tests/integration/serving/test_freshness.py checks that a running server exports the metrics
they read."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from monitoring import (
    SCENARIO,
    alert_names,
    as_promql,
    dashboard,
    dashboard_exprs,
    metric_names,
    rule_groups,
)
from rendering import CHART, SCENARIOS, one, render

HERE = Path(__file__).parent
RULE_TESTS = HERE / "prometheus-rules.test.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not on PATH: `make promtool` installs Debian's prometheus"
)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def _write_rules(path: Path, groups: list[dict[str, Any]]) -> None:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False, width=1000))


def test_alerts_and_dashboard_are_off_by_default() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render(SCENARIOS["dev"])}
    assert not [k for k in kinds if k[0] == "PrometheusRule" or k[1].endswith("-dashboard")]


@needs_promtool
def test_rules_pass_promtool_check(tmp_path: Path) -> None:
    _write_rules(tmp_path / "rules.yaml", rule_groups())
    done = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_promtool
def test_each_alert_fires_when_it_should_and_not_otherwise(tmp_path: Path) -> None:
    """`promtool test rules` over the input series of prometheus-rules.test.yaml."""
    _write_rules(tmp_path / "rules.yaml", rule_groups())
    shutil.copy(RULE_TESTS, tmp_path / "tests.yaml")
    done = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_case() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    firing = {
        case["alertname"]
        for test in cases
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alert_names(rule_groups()) - firing == set()


@needs_promtool
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, as a recording rule, through `promtool check rules`."""
    exprs = dashboard_exprs(dashboard())
    rules = [{"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, e in enumerate(exprs)]
    _write_rules(tmp_path / "dashboard.yaml", [{"name": "dashboard", "rules": rules}])
    done = _promtool("check", "rules", "dashboard.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_shows_traffic_latency_errors_entities_store_reads_and_freshness() -> None:
    board = dashboard()
    assert board == json.loads((CHART / "files" / "dashboard.json").read_text())
    read = {name for e in dashboard_exprs(board) for name in metric_names(e)}
    assert {
        "feature_server_requests_total",
        "feature_server_request_duration_seconds_bucket",
        "feature_server_entities_per_request_bucket",
        "feature_server_online_store_read_seconds_bucket",
        "feature_platform_online_newest_event_age_seconds",
        "feature_platform_materialization_last_success_timestamp_seconds",
    } <= read
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            # One data source and one release's servers (or its skew check's environment),
            # picked on the dashboard.
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
            server = 'namespace="$namespace", job="$job"' in target["expr"]
            skew_check = 'environment="$environment"' in target["expr"]
            assert server or skew_check, panel["title"]


def test_dashboard_configmap_carries_the_sidecar_label() -> None:
    cm = one(render(SCENARIOS[SCENARIO]), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    custom = {"grafanaDashboard": {"labelKey": "dashboards", "labelValue": "feast"}}
    cm = one(render(SCENARIOS[SCENARIO], custom), "ConfigMap", "-dashboard")
    assert cm["metadata"]["labels"]["dashboards"] == "feast"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]


def test_rules_select_this_release_only() -> None:
    """Another release's series in the same Prometheus must not fire this one's alerts."""
    objects = render(SCENARIOS[SCENARIO], release="other")
    for expr in (r["expr"] for g in rule_groups(objects) for r in g["rules"]):
        if "feature_server_" in expr or "feature_platform_online" in expr:
            assert 'job="other-feast-platform-server"' in expr, expr
        if "kube_job_owner" in expr:
            assert 'owner_name="other-feast-platform-' in expr, expr


def test_accepted_eviction_reaches_the_settings_and_drops_the_policy_alert() -> None:
    """redis.allowEviction: the servers and jobs run on an evicting Redis, and the policy
    alone no longer alerts; evicted keys still do."""
    default = render(SCENARIOS[SCENARIO])
    assert one(default, "ConfigMap", "-settings")["data"]["REDIS_ALLOW_EVICTION"] == "false"
    assert "FeaturePlatformRedisEvictionPolicy" in alert_names(rule_groups(default))
    allowed = render(SCENARIOS[SCENARIO], {"redis": {"allowEviction": True}})
    assert one(allowed, "ConfigMap", "-settings")["data"]["REDIS_ALLOW_EVICTION"] == "true"
    names = alert_names(rule_groups(allowed))
    assert "FeaturePlatformRedisEvictionPolicy" not in names
    assert "FeaturePlatformRedisEvictingKeys" in names
