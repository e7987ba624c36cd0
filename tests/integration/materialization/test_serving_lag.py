"""Serving lag (README, "Serving lag"): between two materialization runs, the feature
server and the training rows at the same instant differ only where a row was created
since the last run, and the next run removes the difference.

Generated data up to now, in dev (Postgres, Redis). `feature-platform materialize` (the
CronJob's command) runs every 30 minutes, the chart's default, over the last hour and a
half, each run seeing the offline tables as they stood then; the rows created since the
last run are written afterwards. The skew check (the platform's comparison of served and
training values at one instant) then finds the differences, and each must be explained
by such a row of the entity's view.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from stacks import Stack

from feature_platform.checks import skew
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

RUN_EVERY = timedelta(minutes=30)
RUNS = 3
SIZES = generator.Sizes(customers=200, merchants=20, days=6, transactions=3_000)
# Every key is drawn several times, so no view's difference escapes the sample.
SAMPLED_ROWS = 1_000


@dataclass
class Lagging:
    stack: Stack
    server: FeatureServer
    tables: dict[str, pd.DataFrame]
    last_run: datetime


def _as_they_stood(tables: dict[str, pd.DataFrame], at: datetime) -> dict[str, pd.DataFrame]:
    """The tables with only the rows created by `at` (labels have no creation time)."""
    return {
        name: df[df["created_timestamp"] <= at] if "created_timestamp" in df else df
        for name, df in tables.items()
    }


@pytest.fixture(scope="module")
def lagging(stack_factory: Callable[..., Stack]) -> Lagging:
    now = datetime.now(UTC).replace(microsecond=0)
    tables = generator.generate(SIZES, as_of=now)
    runs = [now - RUN_EVERY * i for i in range(RUNS, 0, -1)]
    stack = stack_factory("dev", "lag")
    stack.write(_as_they_stood(tables, runs[0]))
    stack.feast("apply")
    for run in runs:
        stack.write(_as_they_stood(tables, run))
        stack.materialize(run)
    stack.write(tables)
    return Lagging(stack, stack.server(), tables, runs[-1])


def _skew_check(lagging: Lagging) -> skew.Result:
    with lagging.stack.active():
        return skew.run("dev", lagging.server.url, SAMPLED_ROWS, 3, None, lambda _m: None)


def _views_of_features(lagging: Lagging) -> dict[str, list[str]]:
    """Feature -> the feature views its value comes from (an on-demand one: its sources)."""
    store = lagging.stack.store()
    sources = {
        odfv.name: list(odfv.source_feature_view_projections)
        for odfv in store.list_on_demand_feature_views()
    }
    return {
        feature.name: sources.get(projection.name, [projection.name])
        for projection in store.get_feature_service(FEATURE_SERVICE).feature_view_projections
        for feature in projection.features
    }


def test_served_and_trained_differ_only_by_rows_created_since_the_last_run(
    lagging: Lagging,
) -> None:
    result = _skew_check(lagging)
    store = lagging.stack.store()
    views = _views_of_features(lagging)
    unexplained = []
    for m in result.mismatches:
        entity = result.entities[m.row]
        explained = False
        for view in views[m.feature]:
            (key,) = store.get_feature_view(view).join_keys
            created = lagging.tables[view].loc[
                lagging.tables[view][key] == entity[key], "created_timestamp"
            ]
            since_run = (created > lagging.last_run) & (created <= result.instant)
            explained = explained or bool(since_run.any())
        if not explained:
            unexplained.append(result.mismatch_record(m))
    assert unexplained == [], f"{len(unexplained)} differences not explained: {unexplained[:5]}"
    rows = len({m.row for m in result.mismatches})
    print(f"serving lag, runs every {RUN_EVERY}: {rows}/{len(result.entities)} rows differ")
    assert result.mismatches, "no row created since the last run changed a served value"

    lagging.stack.materialize()
    assert _skew_check(lagging).mismatches == []
