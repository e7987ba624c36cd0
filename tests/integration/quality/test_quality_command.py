"""`feature-platform quality ENV`: shifts injected into the last day's offline rows are
flagged by name (and no other feature beyond those the same data flags without them), in
the JSON, the report and the metrics a real Pushgateway receives."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import requests
from conftest import AS_OF, MAT_END, SEED, deploy
from pushgateway import Pushgateway
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import database as quality_db
from feature_platform.quality import history, metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "chart"))
import monitoring  # the chart tier's helpers, on the path set above

SERVICE = "fraud_detection_v1"
QUALITY_PREFIXES = (
    "feature_platform_quality_",
    "feature_platform_feature_drift",
    "feature_platform_feature_null_share",
    "feature_platform_feature_mean",
)
SIZES = generator.Sizes(customers=3_000, merchants=1_500, days=10, transactions=5_000)
# The shifts, in the last day only: cents instead of euros from one market's pipeline, a
# category renamed upstream.
INJECTED = {("customer_stats", "avg_purchase_30d"), ("merchant_stats", "category")}


def _shifted(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    customers = tables["customer_stats"].copy()
    merchants = tables["merchant_stats"].copy()
    last_day = pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=24)
    recent = customers["event_timestamp"] >= last_day
    customers.loc[recent & (customers["home_country"] == "DE"), "avg_purchase_30d"] *= 100
    recent = merchants["event_timestamp"] >= last_day
    merchants.loc[recent, "category"] = merchants.loc[recent, "category"].replace(
        {"travel": "trips"}
    )
    return {**tables, "customer_stats": customers, "merchant_stats": merchants}


def _quality(stack: Stack, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any]:
    capsys.readouterr()
    with stack.active():
        code = cli.main(["quality", stack.env, *args])
    out, _ = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None


def _flagged(summary: dict[str, Any]) -> set[tuple[str, str]]:
    return {(f["view"], f["feature"]) for f in summary["features"] if f["drifted"]}


@pytest.fixture(scope="module")
def dev(stack_factory: Callable[..., Stack]) -> Iterator[tuple[Stack, dict[str, pd.DataFrame]]]:
    stack = stack_factory("dev", "quality_run")
    tables = generator.generate(SIZES, seed=SEED, progress=lambda _: None)
    stack.write(tables)
    stack.feast("apply")
    yield stack, tables


def test_injected_shifts_are_flagged_by_name_and_pushed(
    dev: tuple[Stack, dict[str, pd.DataFrame]],
    pushgateway: Pushgateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack, tables = dev
    report = tmp_path / "report.html"
    code, clean = _quality(stack, capsys, "--report", str(report))
    assert code == 0
    assert not _flagged(clean) & INJECTED

    stack.write(_shifted(tables))
    code, shifted = _quality(
        stack, capsys, "--report", str(report), "--pushgateway", pushgateway.url
    )
    assert code == 0
    assert _flagged(shifted) - _flagged(clean) == INJECTED

    page = report.read_text()
    for view, feature in INJECTED:
        assert f"{view}.{feature} <span class='verdict'>drifted</span>" in page
    pushed = {
        (labels.get("view"), labels.get("feature")): value
        for name, labels, value in pushgateway.samples(metrics.PUSH_JOB, "dev")
        if name == "feature_platform_feature_drifted"
    }
    assert {key for key, value in pushed.items() if value == 1} == _flagged(shifted)
    success = [v for n, _, v in pushgateway.samples(metrics.PUSH_JOB, "dev")
               if n == "feature_platform_quality_success"]  # fmt: skip
    assert success == [1]
    # Every quality metric the alerts and the dashboard read is one the run pushed.
    read = monitoring.all_metric_names(
        [*monitoring.rule_exprs(monitoring.rule_groups()),
         *monitoring.dashboard_exprs(monitoring.dashboard())]
    )  # fmt: skip
    quality_read = {n for n in read if n.startswith(QUALITY_PREFIXES)}
    assert quality_read and quality_read <= {
        n for n, _, _ in pushgateway.samples(metrics.PUSH_JOB, "dev")
    }


def test_a_missing_training_set_is_a_clear_error(
    dev: tuple[Stack, dict[str, pd.DataFrame]], capsys: pytest.CaptureFixture[str]
) -> None:
    stack, _ = dev
    code, _ = _quality(stack, capsys, "--training-set", "/nonexistent/set.parquet")
    assert code == 2


SERVED_SIZES = generator.Sizes(customers=600, merchants=50, days=3, transactions=1_000)
FLUSH = {"FEATURE_SERVER_SERVED_VECTORS_FLUSH_SECONDS": "0.2", **WRITABLE}


# Where the cluster's servers log: a table of the offline database every job can read.
DESTINATION = "postgresql:served_vectors"


@dataclass
class Served:
    stack: Stack
    server: FeatureServer
    tables: dict[str, pd.DataFrame]

    def execute(self, query: str) -> list[tuple[Any, ...]]:
        settings = self.stack.settings()
        conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
        with psycopg.connect(conninfo) as conn:
            cursor = conn.execute(query)
            return cursor.fetchall() if cursor.description else []

    def logged(self) -> int:
        try:
            return int(self.execute("SELECT count(*) FROM served_vectors")[0][0])
        except psycopg.errors.UndefinedTable:  # made by the first write
            return 0


@pytest.fixture(scope="module")
def served(stack_factory: Callable[..., Stack]) -> Served:
    stack = stack_factory("dev", "quality_served", {"SERVED_VECTORS_PATH": DESTINATION})
    tables = generator.generate(SERVED_SIZES, seed=SEED, as_of=AS_OF)
    deploy(stack, tables)
    return Served(stack, stack.server(settings=FLUSH), tables)


def _serve(served: Served, customers: list[int]) -> None:
    """Read every customer's vector, then wait (bounded) until the server logged them."""
    before = served.logged()
    for chunk in range(0, len(customers), 100):
        batch = customers[chunk : chunk + 100]
        body = {"feature_service": SERVICE, "entities": _entities(batch)}
        response = requests.post(f"{served.server.url}/get-online-features", json=body, timeout=10)
        assert response.status_code == 200, response.text
    deadline = time.monotonic() + 20
    while served.logged() < before + len(customers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served.logged() == before + len(customers)


def _entities(customers: list[int]) -> dict[str, list[Any]]:
    return {
        "customer_id": customers,
        "merchant_id": [1 + c % SERVED_SIZES.merchants for c in customers],
        "amount": [10.0] * len(customers),
    }


def test_served_vectors_against_their_training_set(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The vectors served for a set of keys against the training set of the same keys at
    the same instant: nothing drifted. Then the online amounts in cents, served again:
    the amount is flagged, by name, and nothing else."""
    customers = sorted(served.tables["customer_stats"]["customer_id"].unique().tolist())
    _serve(served, customers)
    # At the instant of serving: a value past its view's ttl since the stack was loaded
    # is served as null and must be null in the training row too.
    labels = pd.DataFrame(_entities(customers)).assign(event_timestamp=pd.Timestamp.now("UTC"))
    labels.to_parquet(tmp_path / "labels.parquet")
    with served.stack.active():
        written = cli.main(["training-set", "dev", "--labels", str(tmp_path / "labels.parquet"),
                            "--output", str(tmp_path / "training.parquet"),
                            "--name", "fraud-model-1"])  # fmt: skip
    assert written == 0
    capsys.readouterr()
    # The training file is gone: the sample recorded with it is the reference, as in a
    # cluster, where the file stays on the training job's volume.
    (tmp_path / "training.parquet").unlink()
    args = ("--training-set", "fraud-model-1", "--served-vectors", DESTINATION,
            "--current-hours", "1", "--report", str(tmp_path / "report.html"))  # fmt: skip
    code, same = _quality(served.stack, capsys, *args)
    assert code == 0
    compared = {(f["view"], f["feature"]): f for f in same["features"]}
    assert compared[("customer_stats", "avg_purchase_30d")]["current_rows"] == len(customers)
    assert _flagged(same) == set()
    target = quality_db.for_settings(served.stack.settings())
    [recorded] = history.training_sets(target, "fraud-model-1")
    assert (recorded.rows, recorded.features) == (len(customers), SERVICE)
    kept = {(row["view"], row["feature"]): row for row in history.latest_statistics(target, "dev")}
    assert set(kept) == set(compared)
    amounts = kept[("customer_stats", "avg_purchase_30d")]
    assert amounts["current_stats"]["rows"] == len(customers)
    assert amounts["reference_stats"]["mean"] == pytest.approx(amounts["current_stats"]["mean"])
    # the recorded sample holds values, not whose they are
    _, sample = history.training_set_sample(target, "fraud-model-1") or (None, None)
    assert sample is not None and len(sample) == len(customers)
    assert not {"customer_id", "merchant_id", "event_timestamp"} & set(sample.columns)
    assert {"avg_purchase_30d", "amount"} <= set(sample.columns)

    stats = served.tables["customer_stats"]
    newest = stats.sort_values("event_timestamp").groupby("customer_id").tail(1)
    cents = newest.assign(
        avg_purchase_30d=newest["avg_purchase_30d"] * 100,
        event_timestamp=pd.Timestamp(MAT_END) + pd.Timedelta(seconds=1),
        created_timestamp=pd.Timestamp(MAT_END) + pd.Timedelta(seconds=1),
    )
    columns = {c: json.loads(cents[c].to_json(orient="values", date_format="iso")) for c in cents}
    body = {"feature_view_name": "customer_stats", "df": columns}
    response = requests.post(
        f"{served.server.url}/write-to-online-store",
        json=body,
        headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    _serve(served, customers)
    code, shifted = _quality(served.stack, capsys, *args)
    assert code == 0
    assert _flagged(shifted) == {("customer_stats", "avg_purchase_30d")}


def test_served_vectors_past_their_days_are_deleted(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--keep-served-days: the run deletes what was served before those days, and only
    that."""
    customers = sorted(served.tables["customer_stats"]["customer_id"].unique().tolist())[:50]
    _serve(served, customers)
    served.execute(
        "UPDATE served_vectors SET logged_at = logged_at - interval '3 days' WHERE request_id IN "
        "(SELECT request_id FROM served_vectors ORDER BY logged_at LIMIT 1)"
    )
    [(old,)] = served.execute(
        "SELECT count(*) FROM served_vectors WHERE logged_at < now() - interval '2 days'"
    )
    kept = served.logged() - old
    assert old > 0 and kept > 0
    report = str(tmp_path / "report.html")
    args = ("--served-vectors", DESTINATION, "--keep-served-days", "2", "--report", report)
    code, _ = _quality(served.stack, capsys, *args)
    assert code == 0
    assert served.logged() == kept
