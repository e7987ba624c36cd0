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


def _serve(in_flight: InFlight, requests: int, cpu_s: float) -> None:
    """`requests` admitted and done one after another, each taking `cpu_s` of CPU time."""
    for _ in range(requests):
        in_flight.admit()
        until = time.thread_time() + cpu_s
        while time.thread_time() < until:
            pass
        in_flight.done()


def test_the_wait_bound_holds_costly_requests_to_those_whose_work_fits() -> None:
    in_flight = InFlight(16, max_wait_s=0.003)
    _serve(in_flight, 2 * InFlight.WINDOW, cpu_s=0.0005)
    # 3 ms of queued work at 0.5 ms of CPU per request (and a little more for the loop)
    assert 4 <= in_flight.limit <= 6, in_flight.cpu_per_request_s
    assert _exported()["feature_server_max_in_flight_requests"] == in_flight.limit
    for _ in range(in_flight.limit):
        in_flight.admit()
    with pytest.raises(HTTPError) as refused:
        in_flight.admit()
    detail = f"the server is at capacity ({in_flight.limit} requests in flight per worker)"
    assert detail in refused.value.detail
    assert detail.encode() in in_flight.refusals[True], "the protocol's refusal says the same"


def test_cheap_requests_keep_the_count_bound() -> None:
    in_flight = InFlight(16, max_wait_s=0.003)
    _serve(in_flight, 2 * InFlight.WINDOW, cpu_s=0.00002)
    assert in_flight.limit == 16
    unbounded = InFlight(0, max_wait_s=0.003)
    _serve(unbounded, 2 * InFlight.WINDOW, cpu_s=0.00002)
    assert unbounded.limit > 16, "without a count bound the wait alone bounds"


def test_a_window_spanning_idle_time_is_no_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    in_flight = InFlight(16, max_wait_s=0.003)
    monkeypatch.setattr(InFlight, "STALE_S", 0.0)
    _serve(in_flight, 2 * InFlight.WINDOW, cpu_s=0.0005)
    assert (in_flight.limit, in_flight.cpu_per_request_s) == (16, 0.0)


def test_a_window_with_refusals_is_no_sample() -> None:
    """Their CPU time is not the requests': counted, the limit would fall the more the
    server is overloaded."""
    in_flight = InFlight(16, max_wait_s=0.003)
    _serve(in_flight, InFlight.WINDOW - 1, cpu_s=0.0005)
    in_flight.refused()
    _serve(in_flight, 1, cpu_s=0.0005)
    assert (in_flight.limit, in_flight.cpu_per_request_s) == (16, 0.0)
    _serve(in_flight, InFlight.WINDOW, cpu_s=0.0005)
    assert in_flight.limit < 16, "the next window without refusals is a sample"
