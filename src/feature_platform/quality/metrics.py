"""The drift run's result on a Prometheus Pushgateway: a job run on a schedule has no
endpoint to scrape. Pushed under job `feature_platform_quality` with the environment as
grouping key; each run replaces the last, so a feature's series says its latest verdict.
"""

from __future__ import annotations

import time

from feature_platform.config.urls import shown
from feature_platform.errors import PlatformError
from feature_platform.quality.monitor import Run

PUSH_JOB = "feature_platform_quality"
PUSHGATEWAY_URL_VAR = "QUALITY_PUSHGATEWAY_URL"
HTTP_TIMEOUT_S = 10.0


class PushError(PlatformError):
    """The Pushgateway did not take the result."""


def push(gateway: str, env: str, run: Run | None) -> None:
    """Success and the run's time always; each feature's scores, thresholds and verdict
    when the run finished (`run` not None)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    success = Gauge("feature_platform_quality_success",
                    "1 when the last quality run compared every feature",
                    registry=registry)  # fmt: skip
    success.set(0 if run is None else 1)
    last = Gauge("feature_platform_quality_last_run_timestamp_seconds",
                 "When the last quality run finished", registry=registry)  # fmt: skip
    last.set(time.time())
    if run is not None:
        labels = ["view", "feature", "test"]
        score = Gauge("feature_platform_feature_drift_score",
                      "The feature's drift score by test (psi, js, ks and chi2 p-values, nulls)",
                      labels, registry=registry)  # fmt: skip
        threshold = Gauge("feature_platform_feature_drift_threshold",
                          "The score's threshold", labels, registry=registry)  # fmt: skip
        drifted = Gauge("feature_platform_feature_drifted",
                        "1 when any of the feature's tests crossed its threshold",
                        ["view", "feature"], registry=registry)  # fmt: skip
        sides = ["view", "feature", "side"]
        nulls = Gauge("feature_platform_feature_null_share",
                      "The share of nulls, in the reference and the current values",
                      sides, registry=registry)  # fmt: skip
        mean = Gauge("feature_platform_feature_mean",
                     "A number's mean, in the reference and the current values",
                     sides, registry=registry)  # fmt: skip
        for compared in run.compared:
            result = compared.result
            for s in result.scores:
                score.labels(compared.view, result.feature, s.test).set(s.value)
                threshold.labels(compared.view, result.feature, s.test).set(s.threshold)
            drifted.labels(compared.view, result.feature).set(1 if result.drifted else 0)
            for side, stats in (("reference", result.reference_stats),
                                ("current", result.current_stats)):  # fmt: skip
                nulls.labels(compared.view, result.feature, side).set(stats["nulls"])
                if "mean" in stats:
                    mean.labels(compared.view, result.feature, side).set(stats["mean"])
    try:
        push_to_gateway(gateway, job=PUSH_JOB, registry=registry,
                        grouping_key={"environment": env}, timeout=HTTP_TIMEOUT_S)  # fmt: skip
    except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
        reason = getattr(exc, "reason", None) or type(exc).__name__
        raise PushError(f"cannot push to the Pushgateway at {shown(gateway)}: {reason}") from None
