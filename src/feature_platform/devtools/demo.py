"""The platform end to end, on one environment: data in, features out, both ways."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
from psycopg import sql

from feature_platform import training
from feature_platform.checks import skew as skew_check
from feature_platform.config import environments, feast_commands
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.errors import EXIT_CONSISTENT, EXIT_MISMATCH
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.materialization import load as materialize
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import monitor, report
from feature_platform.serving.client import online_request, response_rows
from feature_platform.training import command as training_command

STEPS = 10
# The drift step's windows: the last day against the week before it.
DRIFT_CURRENT = pd.Timedelta(hours=24)
DRIFT_BASELINE = pd.Timedelta(days=7)


def _step(number: int, text: str) -> float:
    print(f"\n[{number}/{STEPS}] {text}", file=sys.stderr, flush=True)
    return time.monotonic()


def _done(started: float) -> None:
    print(f"      done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)


def _run_feast(env: str, args: list[str]) -> None:
    result = feast_commands.run(env, args, check=False)
    if result.returncode != 0:
        raise SystemExit(f"feast {args[0]} failed with exit code {result.returncode}")


def _vector_table(response: dict[str, Any], keys: list[str]) -> str:
    """One column per requested entity, one row per feature, statuses inline."""
    names = response["metadata"]["feature_names"]
    rows = response_rows(response)
    statuses = [col["statuses"] for col in response["results"]]
    table = {}
    for i, row in enumerate(rows):
        label = ", ".join(f"{k}={row[k]}" for k in keys)
        row_statuses = [column[i] for column in statuses]
        table[label] = [
            value if status == "PRESENT" else status
            for value, status in zip(row.values(), row_statuses, strict=True)
        ]
    return pd.DataFrame(table, index=names).drop(index=keys).to_string()


def _pick_requests(labels: pd.DataFrame, known: pd.Series) -> dict[str, list[Any]]:
    """Two recent real transactions of customers with history, and one customer the
    platform has never seen."""
    with_history = labels[labels["customer_id"].isin(known)]
    recent = with_history.sort_values("event_timestamp").tail(2)
    return {
        "customer_id": [*recent["customer_id"].tolist(), int(labels["customer_id"].max()) + 1],
        "merchant_id": [*recent["merchant_id"].tolist(), int(recent["merchant_id"].iloc[0])],
        "amount": [*recent["amount"].tolist(), 250.0],
    }


def _detail(message: str) -> None:
    print(f"      {message}", file=sys.stderr, flush=True)


def _reset(env: str, settings: dict[str, str]) -> None:
    """Remove what an earlier run left. Regenerated rows can share a timestamp with rows
    already online, and Feast skips online writes that are not newer: stale values would
    stay. So the online data goes, and the registry starts empty: Feast's SQL registry
    keeps feature-view version history through a teardown, and the next apply then fails
    on a duplicate key, so the registry database itself is recreated."""
    offline_tables.ensure_databases(settings, _detail)
    store = feast_commands.open_store(env)
    if any(p.name == store.project for p in store.list_projects()):
        store.teardown()
        _detail(f"removed the online data of project {store.project}")
    if offline_tables.source_kind(settings) == "file":
        (Path(settings["PLATFORM_DATA_DIR"]) / "registry.db").unlink(missing_ok=True)
    else:
        conninfo = offline_tables.postgres_conninfo(settings, "postgres")
        name = sql.Identifier(settings["REGISTRY_DB"])
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    _detail("the registry is empty")


def run(env: str, sizes: generator.Sizes, seed: int = 7) -> int:
    settings = feast_commands.prepare(env)

    started = _step(1, f"resetting {env}: the demo rebuilds its data from scratch")
    _reset(env, settings)
    _done(started)

    started = _step(
        2,
        f"generating data for {sizes.customers:,} customers and "
        f"{sizes.merchants:,} merchants over {sizes.days} days",
    )
    tables = generator.generate(sizes, seed=seed, as_of=generator.default_as_of())
    offline_tables.write(settings, tables, progress=_detail)
    _done(started)

    started = _step(3, "feast apply: registering entities, views and the feature service")
    _run_feast(env, ["apply"])
    _done(started)

    started = _step(4, "feature-platform materialize: offline store -> online store")
    if materialize.job(env, None, _detail) != 0:
        raise SystemExit("materialization failed (see the line above)")
    _done(started)

    started = _step(5, "starting the feature server")
    labels = tables["transactions"]
    entities = _pick_requests(labels, tables["customer_stats"]["customer_id"])
    log_path = environments.PROJECT_ROOT / ".data" / f"feature-server-{env}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log, FeatureServer(env, log=log) as server:
        _detail(f"{server.url} (log: {log_path})")
        _done(started)
        started = _step(6, "fetching feature vectors over HTTP")
        body = online_request(entities, feature_service=training.FEATURE_SERVICE)
        _detail(f"curl -s -X POST {server.url}/get-online-features -d '{json.dumps(body)}'")
        response = server.online_features(entities, feature_service=training.FEATURE_SERVICE)
        print("\nOnline feature vectors (the last customer is new: no history yet)")
        print(_vector_table(response, ["customer_id", "merchant_id"]))
        _done(started)

        started = _step(
            7, "feature-platform training-set: every labelled transaction, point in time"
        )
        labels_path = log_path.parent / f"labels-{env}.parquet"
        output = log_path.parent / f"training-set-{env}.parquet"
        labels.to_parquet(labels_path, index=False)
        _detail(f"feature-platform training-set {env} --labels {labels_path} --output {output}")
        training_command.build(
            training_command.Request(env=env, labels_path=labels_path, output=output), _detail
        )
        train = pd.read_parquet(output)
        # Spread over the whole period, from rows with every feature when there are enough:
        # the hourly counters hold a value for few transactions.
        complete = train.dropna()
        pool = complete if len(complete) >= 5 else train
        sample = pool.iloc[:: max(1, len(pool) // 5)].head(5)
        print("\nTraining rows: features as they were at each transaction's time")
        print(sample.set_index("transaction_id").T.to_string())
        _done(started)

        started = _step(8, "skew check: the server's vectors against training rows, same keys")
        try:
            check = skew_check.run(
                env, server.url, skew_check.DEFAULT_ROWS, seed, token=None, say=_detail
            )
        except skew_check.CheckError as exc:
            raise SystemExit(f"skew check failed: {exc}") from None
        print(f"\n{check.report()}")
        _done(started)

    started = _step(9, "feature quality: the last day's rows against the week before")
    report_path = log_path.parent / f"quality-report-{env}.html"
    _drift(env, settings, tables, report_path)
    _done(started)

    _step(10, "done")
    return EXIT_CONSISTENT if check.consistent else EXIT_MISMATCH


def _drift(
    env: str, settings: dict[str, str], tables: dict[str, pd.DataFrame], report_path: Path
) -> None:
    """Drift as generated (new customers' first day is busier than the week before), then
    with a shift injected on purpose: the last day's amounts in cents, as if one pipeline
    switched units. The generated rows are written back after."""
    now = pd.Timestamp.now(tz="UTC")
    current, baseline = monitor.windows(now.to_pydatetime(), DRIFT_CURRENT, DRIFT_BASELINE)
    stats = tables["customer_stats"]
    cents = stats.assign(
        avg_purchase_30d=stats["avg_purchase_30d"].where(
            stats["event_timestamp"] < now - DRIFT_CURRENT, stats["avg_purchase_30d"] * 100
        )
    )
    store = feast_commands.open_store(env)
    try:
        for title, rows in (("as generated", stats), ("amounts in cents", cents)):
            offline_tables.write(settings, {"customer_stats": rows})
            said = _detail if rows is stats else lambda _line: None  # the same counts
            found = monitor.run(store, current, baseline, None, said)
            names = [f"{c.view}.{c.result.feature} ({c.result.main.test} "
                     f"{c.result.main.value:.3g})" for c in found.drifted] or ["none"]  # fmt: skip
            print(f"\nDrift, {title}: {len(found.drifted)} of {len(found.compared)} features")
            print("  " + "\n  ".join(names))
    finally:
        offline_tables.write(settings, {"customer_stats": stats})
        feast_registry.release(store)
    report_path.write_text(report.html(found))
    _detail(f"report of the injected shift: {report_path}")
