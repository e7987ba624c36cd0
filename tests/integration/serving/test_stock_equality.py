"""The platform's server answers what stock `feast serve` on Feast's own Redis store
answers, but for the platform's two rules (stock_feast.py): NOT_FOUND for entities never
written, and values older than their view's ttl withheld.

This module's stack holds such values: every row up to MAT_END is online, not only each
view's ttl window, and every tenth customer's daily snapshots stopped four days ago.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pandas as pd
import pytest
from conftest import MAT_END, SIZES, deploy
from stacks import Stack
from stock_feast import PAST_TTL, Views, by_name, compare, launch_stock, post, request_bodies

from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE


def _snapshots_stopped(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Every tenth customer's newest snapshot older than customer_stats' ttl (two days)."""
    stats = tables["customer_stats"]
    stopped = (stats["customer_id"] % 10 == 0) & (
        stats["event_timestamp"] > MAT_END - timedelta(days=4)
    )
    return {**tables, "customer_stats": stats[~stopped]}


@pytest.fixture(scope="module")
def stack(stack_factory: Callable[..., Stack], generated_tables: dict[str, pd.DataFrame]) -> Stack:
    return deploy(stack_factory("dev", "stock"), _snapshots_stopped(generated_tables), history=True)


@pytest.fixture(scope="module")
def servers(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FeatureServer, FeatureServer]:
    stock = launch_stock(stack, tmp_path_factory.mktemp("stock"))
    ours = stack.server()
    stock.wait_ready()
    return ours, stock


@pytest.fixture(scope="module")
def views(stack: Stack) -> Views:
    return Views.of(stack.store())


@pytest.mark.parametrize("body", request_bodies(SIZES))
def test_responses_equal_stock_feast(
    servers: tuple[FeatureServer, FeatureServer], views: Views, body: dict[str, Any]
) -> None:
    compared = compare(*servers, body, views)
    assert compared.problems == []


def test_the_requests_reach_values_past_ttl_in_every_view(
    servers: tuple[FeatureServer, FeatureServer], views: Views
) -> None:
    """Otherwise the comparison above would not exercise the ttl rule."""
    seen: dict[str, Counter[str]] = {view: Counter() for view in views.ttl_s}
    for body in request_bodies(SIZES):
        for view, states in compare(*servers, body, views).states.items():
            seen[view].update(states)
    assert all(states[PAST_TTL] > 0 for states in seen.values()), seen


def test_request_data_keeps_its_declared_type(
    servers: tuple[FeatureServer, FeatureServer],
) -> None:
    """`amount` is Float64. Stock Feast types the column by its first value, so after an
    integer 5 it truncates 7.25 to 7 and computes the on-demand features from the wrong
    amount. The platform converts by the declared type."""
    body = {
        "feature_service": FEATURE_SERVICE,
        "entities": {"customer_id": [8, 9], "merchant_id": [3, 3], "amount": [5, 7.25]},
    }
    ours, stock = servers
    served, theirs = by_name(post(ours, body).json()), by_name(post(stock, body).json())
    avg = served["avg_purchase_30d"][0][1]
    assert avg is not None, "customer 9 needs history for this check"
    assert served["amount_over_avg_30d"][0][1] == round(7.25 - avg, 6)
    assert theirs["amount_over_avg_30d"][0][1] == round(7 - avg, 6)
