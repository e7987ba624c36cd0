"""Served vectors are recorded: a logged feature service's responses reach its
destination with the values, statuses and times served, on the fast path and on Feast's,
and a failing destination never fails a request.

A stack of its own: its feature service is applied with a logging destination.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from conftest import AS_OF, SEED, deploy
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from stacks import Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer

SIZES = generator.Sizes(customers=30, merchants=5, days=3, transactions=100)
SERVICE = "fraud_detection_v1"
FLUSH = {"FEATURE_SERVER_SERVED_VECTORS_FLUSH_SECONDS": "0.2"}


@dataclass
class Logged:
    server: FeatureServer
    destination: Path


@pytest.fixture(scope="module")
def logged(stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Logged:
    destination = tmp_path_factory.mktemp("served") / "vectors"
    stack = stack_factory("dev", "served", {"SERVED_VECTORS_PATH": str(destination)})
    deploy(stack, generator.generate(SIZES, seed=SEED, as_of=AS_OF))
    return Logged(stack.server(settings=FLUSH), destination)


def _read(server: FeatureServer, customers: list[int], full_names: bool = False) -> dict[str, Any]:
    body = {
        "feature_service": SERVICE,
        "entities": {
            "customer_id": customers,
            "merchant_id": [1 + c % SIZES.merchants for c in customers],
            "amount": [10.0 + c for c in customers],
        },
        "full_feature_names": full_names,
    }
    response = requests.post(f"{server.url}/get-online-features", json=body, timeout=10)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _logged_rows(destination: Path, customers: list[int], timeout_s: float = 15) -> list[dict]:
    """The logged rows of these customers, once all of them are there (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = []
        for file in sorted(destination.glob("*.parquet")) if destination.is_dir() else []:
            try:  # the server may be writing this one right now
                table = pq.read_table(file)
            except (pa.ArrowInvalid, OSError):
                continue
            rows += [r for r in table.to_pylist() if r["customer_id"] in customers]
        if len(rows) >= len(customers) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def _metric(server: FeatureServer, outcome: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    found = re.search(rf'feature_server_served_vectors_total{{outcome="{outcome}"}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("path", ["fast", "feast"])
def test_served_vectors_reach_the_destination_as_served(logged: Logged, path: str) -> None:
    customers = [1, 2, 3, 10_000_001] if path == "fast" else [4, 5, 10_000_002]
    started = datetime.now().astimezone()
    response = _read(logged.server, customers, full_names=path == "feast")
    rows = {r["customer_id"]: r for r in _logged_rows(logged.destination, customers)}
    assert sorted(rows) == sorted(customers)

    names = response["metadata"]["feature_names"]
    checked = 0
    for name, result in zip(names, response["results"], strict=True):
        if name in ("customer_id", "merchant_id"):
            continue
        column = name if "__" in name else next(c for c in rows[customers[0]] if c.endswith(
            f"__{name}") and not c.startswith("__"))  # fmt: skip
        for i, customer in enumerate(customers):
            row = rows[customer]
            assert row[column] == pytest.approx(result["values"][i]), (column, customer)
            assert row[f"{column}__status"] == FieldStatus.Value(result["statuses"][i])
            served_at = datetime.fromisoformat(result["event_timestamps"][i])
            assert row[f"{column}__timestamp"] == served_at, (column, customer)
            checked += 1
    assert checked >= 10 * len(customers)
    for customer in customers:
        assert rows[customer]["amount"] == 10.0 + customer
        assert rows[customer]["__log_timestamp"] >= started
    if path == "feast":  # Feast leaves on-demand features out under full_feature_names
        assert rows[4]["transaction_vs_history__amount_to_avg_30d__status"] == FieldStatus.INVALID
    # An unknown customer is logged as served: NOT_FOUND, null.
    unknown = rows[customers[-1]]
    assert unknown["customer_stats__avg_purchase_30d__status"] == FieldStatus.NOT_FOUND
    assert unknown["customer_stats__avg_purchase_30d"] is None


def test_a_failing_destination_fails_no_request_and_counts_the_drops(logged: Logged) -> None:
    _logged_rows(logged.destination, [1])  # the directory exists by now
    shutil.rmtree(logged.destination)
    logged.destination.write_text("not a directory: every write fails")
    try:
        statuses = [_read(logged.server, [1 + i % 20]) and 200 for i in range(200)]
        assert statuses == [200] * 200
        deadline = time.monotonic() + 15
        while _metric(logged.server, "dropped_write_failed") < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(logged.server, "dropped_write_failed") >= 200
    finally:
        logged.destination.unlink()
    # The destination back: serving is recorded again.
    _read(logged.server, [7])
    assert [r["customer_id"] for r in _logged_rows(logged.destination, [7])] == [7]
