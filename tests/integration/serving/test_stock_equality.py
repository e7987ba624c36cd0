"""The platform's server answers exactly what stock `feast serve` answers.

Compared feature by feature: Feast orders the columns of its response by string
hashes, which differ between processes (PYTHONHASHSEED), so position is not part of
its contract; name, values, statuses and event timestamps are.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import requests
from conftest import SIZES
from stacks import Stack

from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE


@pytest.fixture(scope="module")
def stock(deployed_dev: Stack) -> Iterator[FeatureServer]:
    with deployed_dev.active():
        server = FeatureServer(deployed_dev.env, stock=True).start()
    yield server
    server.stop()


def _by_name(response: dict[str, Any]) -> dict[str, tuple[list, list, list]]:
    names = response["metadata"]["feature_names"]
    return {
        name: (col["values"], col["statuses"], col["event_timestamps"])
        for name, col in zip(names, response["results"], strict=True)
    }


def _requests() -> list[dict[str, Any]]:
    rng = np.random.default_rng(17)
    bodies: list[dict[str, Any]] = []
    for n in (1, 3, 10, 100):
        customers = rng.integers(1, SIZES.customers + 40, n).tolist()  # some never seen
        merchants = rng.integers(1, SIZES.merchants + 5, n).tolist()
        amounts = np.round(rng.lognormal(3.5, 1, n), 2).tolist()
        entities = {"customer_id": customers, "merchant_id": merchants, "amount": amounts}
        bodies.append({"feature_service": FEATURE_SERVICE, "entities": entities})
        bodies.append({
            "features": ["merchant_stats:avg_rating", "customer_stats:avg_purchase_30d",
                         "customer_txn_1h:n_txn_1h"],
            "entities": {"customer_id": customers, "merchant_id": merchants},
        })  # fmt: skip
    # Repeated rows, the request keys in another order.
    bodies.append({
        "feature_service": FEATURE_SERVICE,
        "entities": {"amount": [5.5, 5.5, 7.25], "merchant_id": [3, 3, 3],
                     "customer_id": [8, 8, 9]},
    })  # fmt: skip
    return bodies


@pytest.mark.parametrize("body", _requests())
def test_responses_equal_stock_feast(
    server_dev: FeatureServer, stock: FeatureServer, body: dict[str, Any]
) -> None:
    ours = requests.post(f"{server_dev.url}/get-online-features", json=body, timeout=10)
    theirs = requests.post(f"{stock.url}/get-online-features", json=body, timeout=10)
    assert ours.status_code == theirs.status_code == 200
    assert _by_name(ours.json()) == _by_name(theirs.json())


def test_request_data_keeps_its_declared_type(
    server_dev: FeatureServer, stock: FeatureServer
) -> None:
    """`amount` is Float64. Stock Feast types the column by its first value, so after an
    integer 5 it truncates 7.25 to 7 and computes the on-demand features from the wrong
    amount. The platform converts by the declared type."""
    body = {
        "feature_service": FEATURE_SERVICE,
        "entities": {"customer_id": [8, 9], "merchant_id": [3, 3], "amount": [5, 7.25]},
    }
    ours = _by_name(requests.post(f"{server_dev.url}/get-online-features", json=body,
                                  timeout=10).json())  # fmt: skip
    theirs = _by_name(requests.post(f"{stock.url}/get-online-features", json=body,
                                    timeout=10).json())  # fmt: skip
    avg = ours["avg_purchase_30d"][0][1]
    assert avg is not None, "customer 9 needs history for this check"
    assert ours["amount_over_avg_30d"][0][1] == round(7.25 - avg, 6)
    assert theirs["amount_over_avg_30d"][0][1] == round(7 - avg, 6)
