"""The bound on requests in flight (serving/saturation.py) and its metrics, in process:
who is admitted and who is refused, what the refusal says, and what /metrics reports."""

from __future__ import annotations

import time

import orjson
import pytest
from prometheus_client import REGISTRY

from feature_platform.errors import HTTPError
from feature_platform.serving import metrics
from feature_platform.serving.saturation import InFlight


def _exported() -> dict[str, float]:
    """What the process's metrics hold once flushed (as before every /metrics answer)."""
    metrics.flush()
    return {
        name: REGISTRY.get_sample_value(name) or 0.0
        for name in (
            "feature_server_in_flight_requests",
            "feature_server_max_in_flight_requests",
            "feature_server_shed_requests_total",
            "feature_server_event_loop_lag_seconds_count",
            "feature_server_event_loop_lag_seconds_sum",
        )
    }


def test_requests_past_the_bound_are_refused_until_one_is_done() -> None:
    in_flight = InFlight(2)
    in_flight.admit()
    in_flight.admit()
    with pytest.raises(HTTPError) as refused:
        in_flight.admit()
    assert in_flight.count == 2, "a refused request holds no slot"
    in_flight.done()
    in_flight.admit()
    assert in_flight.count == 2
    error = refused.value
    assert error.status == 503
    assert error.headers == [(b"retry-after", b"1")]
    assert orjson.loads(orjson.dumps(error.body())) == {
        "error": "service unavailable",
        "detail": "the server is at capacity (2 requests in flight per worker); retry after 1s",
    }


def test_without_a_bound_nothing_is_refused() -> None:
    in_flight = InFlight(0)
    for _ in range(10_000):
        in_flight.admit()
    assert in_flight.count == 10_000


def test_metrics_report_in_flight_the_bound_and_the_shed() -> None:
    shed_before = _exported()["feature_server_shed_requests_total"]
    in_flight = InFlight(3)
    assert _exported()["feature_server_max_in_flight_requests"] == 3
    for _ in range(3):
        in_flight.admit()
    for _ in range(4):
        with pytest.raises(HTTPError):
            in_flight.admit()
    exported = _exported()
    assert exported["feature_server_in_flight_requests"] == 3
    assert exported["feature_server_shed_requests_total"] - shed_before == 4
    for _ in range(3):
        in_flight.done()
    assert _exported()["feature_server_in_flight_requests"] == 0


def test_the_event_loop_lag_is_how_late_the_scheduled_flush_ran() -> None:
    before = _exported()
    metrics._Pending().flush_when_due(time.perf_counter() - 0.004)  # due 4 ms ago
    after = _exported()
    name = "feature_server_event_loop_lag_seconds"
    assert after[f"{name}_count"] - before[f"{name}_count"] == 1
    assert 0.004 <= after[f"{name}_sum"] - before[f"{name}_sum"] < 1.0
