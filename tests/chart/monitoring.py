"""The chart's alerts and dashboard as data: rule groups, dashboard queries, and the
metric names their PromQL reads (checked against what the platform exports)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from rendering import one, rendered_scenario

# The shipped scenario with the PrometheusRule and the dashboard on.
SCENARIO = "ci/autoscaling-values"

# kube-state-metrics' Job metrics the rules read (its docs/metrics/workload/job-metrics.md).
KUBE_STATE_METRICS = {
    "kube_job_status_failed",
    "kube_job_status_succeeded",
    "kube_job_status_start_time",
    "kube_job_owner",
}

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_OPERATORS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def rule_groups(objects: Iterable[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    rule = one(objects if objects is not None else rendered_scenario(SCENARIO), "PrometheusRule")
    return list(rule["spec"]["groups"])


def rule_exprs(groups: list[dict[str, Any]]) -> list[str]:
    return [str(rule["expr"]) for group in groups for rule in group["rules"]]


def alert_names(groups: list[dict[str, Any]]) -> set[str]:
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def dashboard(objects: Iterable[dict[str, Any]] | None = None) -> dict[str, Any]:
    cm = one(
        objects if objects is not None else rendered_scenario(SCENARIO), "ConfigMap", "-dashboard"
    )
    (text,) = cm["data"].values()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def dashboard_exprs(board: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def as_promql(grafana_expr: str) -> str:
    """A dashboard query as plain PromQL: Grafana's range variable made a duration."""
    return grafana_expr.replace("$__rate_interval", "5m")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    operators, label names of a grouping clause, or inside matchers, ranges and strings."""
    text = _STRINGS.sub('""', expr)
    for pattern in (_MATCHERS, _RANGES, _GROUPING):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        is_function = text[match.end() :].lstrip().startswith("(")
        if not is_function and match.group() not in _OPERATORS:
            names.add(match.group())
    return names


def all_metric_names(exprs: Iterable[str]) -> set[str]:
    return set().union(*(metric_names(e) for e in exprs))
