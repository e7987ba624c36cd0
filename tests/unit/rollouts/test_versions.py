"""The versioning convention, the versioned path a breaking plan offers, and retirement."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from feast import Field, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from test_plan_diff import diff, entity, service, view

from feature_platform.config.guard import ConfigError
from feature_platform.rollouts import versions
from feature_platform.rollouts.diff import BREAKING, SAFE, Plan, classify

NOW = 1_000_000.0
HOUR = 3600.0


@pytest.mark.parametrize(
    ("name", "parsed", "successor", "predecessors"),
    [
        ("customer_stats", ("customer_stats", 1), "customer_stats_v2", []),
        ("stats_v2", ("stats", 2), "stats_v3", ["stats_v1", "stats"]),
        ("fraud_detection_v1", ("fraud_detection", 1), "fraud_detection_v2", []),
        ("model_v3", ("model", 3), "model_v4", ["model_v2"]),
        ("merchant_stats_v0", ("merchant_stats_v0", 1), "merchant_stats_v0_v2", []),
        ("v2", ("v2", 1), "v2_v2", []),
    ],
)  # fmt: skip
def test_names(name: str, parsed: tuple, successor: str, predecessors: list[str]) -> None:
    assert versions.parse(name) == parsed
    assert versions.successor(name) == successor
    assert versions.predecessors(name) == predecessors


def test_predecessor_and_successor_among_existing_names() -> None:
    assert versions.predecessor_in("customer_stats_v2", {"customer_stats"}) == "customer_stats"
    assert (
        versions.predecessor_in("customer_stats_v2", {"customer_stats_v1"}) == "customer_stats_v1"
    )
    assert versions.predecessor_in("customer_stats_v3", {"customer_stats"}) is None
    assert versions.predecessor_in("customer_stats", {"customer_stats_v2"}) is None
    names = {"fraud_detection_v1", "fraud_detection_v2", "fraud_detection_v3", "other_v9"}
    assert versions.successor_in("fraud_detection_v1", names) == "fraud_detection_v3"
    assert versions.successor_in("fraud_detection_v3", names) is None
    assert versions.next_free("fraud_detection_v1", names) == "fraud_detection_v4"


def test_quiet_period_setting() -> None:
    assert versions.quiet_period({}) == timedelta(hours=24)
    assert versions.quiet_period({versions.QUIET_PERIOD_VAR: "2"}) == timedelta(seconds=2)
    for bad in ("-1", "0", "a day"):
        with pytest.raises(ConfigError, match=versions.QUIET_PERIOD_VAR):
            versions.quiet_period({versions.QUIET_PERIOD_VAR: bad})


def test_breaking_view_change_offers_a_new_version_and_new_services() -> None:
    old = view("customer_stats")
    new = view("customer_stats", features={"avg": Float64})  # `count` removed
    other = view("merchant_stats")
    changes = classify(
        diff(
            updates=((old, new),),
            keeps=(entity(), other, service(old, other, name="fraud_detection_v1")),
        )
    )
    (change,) = changes
    assert change.classification == BREAKING
    assert change.instead == {
        "keep": "customer_stats",
        "add": "customer_stats_v2",
        "services": {"fraud_detection_v1": "fraud_detection_v2"},
    }
    plan = Plan("dev", "p", "initialized", changes)
    assert plan.exit_code == 3
    markdown = plan.markdown()
    assert "**Ship it as a version instead**" in markdown
    assert (
        "keep feature view `customer_stats` as it is; add `customer_stats_v2` with the change; "
        "add `fraud_detection_v2` beside `fraud_detection_v1`, reading `customer_stats_v2`; "
        "apply backfills `customer_stats_v2` before it registers the new service(s)"
    ) in markdown
    assert json.loads(plan.to_json())["changes"][0]["instead"]["add"] == "customer_stats_v2"


def test_an_on_demand_view_of_the_view_gets_a_version_too() -> None:
    old, new = view("stats"), view("stats", features={"avg": Float64})
    request = RequestSource(name="req", schema=[Field(name="amount", dtype=Float64)])

    @on_demand_feature_view(
        sources=[new, request], schema=[Field(name="ratio", dtype=Float64)], mode="python"
    )
    def ratio(inputs: dict[str, Any]) -> dict[str, Any]:
        return {"ratio": [a / b for a, b in zip(inputs["amount"], inputs["avg"], strict=True)]}

    (change,) = classify(diff(updates=((old, new),), keeps=(ratio, service(ratio))))
    assert change.instead == {
        "keep": "stats",
        "add": "stats_v2",
        "services": {"model_v1": "model_v2"},
        "on_demand": {"ratio": "ratio_v2"},
    }
    markdown = Plan("dev", "p", "initialized", [change]).markdown()
    assert "add `model_v2` beside `model_v1`, `ratio_v2` beside `ratio`, reading `stats_v2`" in (
        markdown
    )
    assert "retire `model_v1`, `ratio`, `stats` once unread for the quiet period" in markdown


def test_a_service_broken_by_its_view_is_offered_once_with_the_view() -> None:
    old, new = view("stats"), view("stats", features={"avg": Float64})
    changes = classify(diff(updates=((old, new), (service(old), service(new)))))
    offers = {c.name: c.instead for c in changes}
    assert {c.name: c.classification for c in changes} == {"stats": BREAKING, "model_v1": BREAKING}
    assert offers["model_v1"] is None
    assert offers["stats"] is not None and offers["stats"]["services"] == {"model_v1": "model_v2"}


def test_the_offered_names_skip_versions_that_exist() -> None:
    old, new = view("stats"), view("stats", features={"avg": Int64, "count": Int64})
    (change,) = classify(diff(updates=((old, new),), keeps=(view("stats_v2"),)))
    assert change.instead is not None and change.instead["add"] == "stats_v3"


def test_breaking_service_change_offers_a_new_service() -> None:
    a, b = view("a"), view("b")
    (change,) = classify(diff(updates=((service(a, b), service(a)),), keeps=(a, b)))
    assert change.classification == BREAKING
    assert change.instead == {
        "keep": "model_v1",
        "add": "model_v2",
        "services": {"model_v1": "model_v2"},
    }


def test_a_safe_change_offers_nothing() -> None:
    old, new = view(), view(features={"avg": Float64, "count": Int64, "max": Float64})
    (change,) = classify(diff(updates=((old, new),)))
    assert (change.classification, change.instead) == (SAFE, None)


def readers(since_hours: float = 100, **services: float) -> versions.Readers:
    """Last reads `hours` ago, a quiet period of 24 hours, a record begun `since_hours` ago."""
    return versions.Readers(
        NOW,
        timedelta(hours=24),
        {s: NOW - h * HOUR for s, h in services.items()},
        since=NOW - since_hours * HOUR,
    )


def retiring(record: versions.Readers | None) -> dict[str, tuple[str, str]]:
    """Delete view v1 and the service reading it; their successors stay."""
    v1, v2 = view("stats"), view("stats_v2")
    old_service, new_service = service(v1, name="model_v1"), service(v2, name="model_v2")
    changes = classify(diff(deletes=(v1, old_service), keeps=(v2, new_service)), record)
    return {c.name: (c.classification, " ".join(f.detail for f in c.findings)) for c in changes}


def test_deleting_an_old_version_unread_for_the_quiet_period_is_a_retirement() -> None:
    got = retiring(readers(model_v1=30, model_v2=0))
    assert got == {
        name: (
            SAFE,
            f"retire: old version, `{new}` succeeds it; last read 1d ago (quiet period 1d)",
        )
        for name, new in (("stats", "stats_v2"), ("model_v1", "model_v2"))
    }
    never = retiring(readers(model_v2=0))
    assert never["model_v1"][0] == SAFE and "never read" in never["model_v1"][1]


@pytest.mark.parametrize("since_hours", [3.0, None])
def test_never_read_counts_only_once_the_record_is_older_than_the_quiet_period(
    since_hours: float | None,
) -> None:
    """A record of reads begun an hour ago (a new or rebuilt Redis), or with no beginning
    (no server wrote it yet), cannot tell an unread service from one read daily."""
    record = versions.Readers(
        NOW,
        timedelta(hours=24),
        {"model_v2": NOW},
        since=None if since_hours is None else NOW - since_hours * HOUR,
    )
    got = retiring(record)
    began = "began 3h ago" if since_hours else "has no beginning yet"
    for name in ("stats", "model_v1"):
        classification, detail = got[name]
        assert classification == BREAKING
        assert f"not read since the record of reads {began}, within the quiet period 1d" in (detail)


def test_deleting_an_old_version_read_within_the_quiet_period_is_breaking() -> None:
    got = retiring(readers(model_v1=3, model_v2=0))
    for name in ("stats", "model_v1"):
        classification, detail = got[name]
        assert classification == BREAKING
        assert "but read 3h ago (quiet period 1d): move its readers first" in detail


def test_a_view_read_by_feature_list_is_not_quiet() -> None:
    record = versions.Readers(
        NOW, timedelta(hours=24), {"model_v1": NOW - 48 * HOUR}, {"stats": NOW - 60}
    )
    got = retiring(record)
    assert got["model_v1"][0] == SAFE
    assert got["stats"] == (
        BREAKING,
        "old version, `stats_v2` succeeds it, but read 1m ago (quiet period 1d): "
        "move its readers first",
    )


def test_without_the_record_of_reads_no_deletion_is_a_retirement() -> None:
    unknown = versions.Readers(NOW, timedelta(hours=24), unknown="ConnectionError: refused")
    got = retiring(unknown)
    assert got["model_v1"] == (
        BREAKING,
        "old version, `model_v2` succeeds it; last read unknown (ConnectionError: refused)",
    )
    assert retiring(None)["stats"][0] == BREAKING


def test_deleting_a_view_without_a_successor_stays_a_deletion() -> None:
    v = view("stats")
    (change,) = classify(diff(deletes=(v,)), readers())
    assert {f.kind for f in change.findings} == {"deleted"}
    assert change.classification == BREAKING
