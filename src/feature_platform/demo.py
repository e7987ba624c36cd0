"""The platform end to end, on one environment: data in, features out, both ways."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from feature_platform import feast_commands, generator, offline_tables, training
from feature_platform.server import FeatureServer, online_request, response_rows

STEPS = 7


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


def _pick_requests(labels: pd.DataFrame) -> dict[str, list[Any]]:
    """Two recent real transactions and one customer the platform has never seen."""
    recent = labels.sort_values("event_timestamp").tail(2)
    return {
        "customer_id": [*recent["customer_id"].tolist(), int(labels["customer_id"].max()) + 1],
        "merchant_id": [*recent["merchant_id"].tolist(), int(recent["merchant_id"].iloc[0])],
        "amount": [*recent["amount"].tolist(), 250.0],
    }


def run(env: str, sizes: generator.Sizes, seed: int = 7) -> int:
    settings = feast_commands.prepare(env)
    as_of = generator.default_as_of()

    started = _step(
        1,
        f"generating data for {sizes.customers:,} customers and "
        f"{sizes.merchants:,} merchants over {sizes.days} days ({env})",
    )
    tables = generator.generate(sizes, seed=seed, as_of=as_of)
    offline_tables.ensure_databases(settings, lambda msg: print(f"      {msg}", file=sys.stderr))
    offline_tables.write(settings, tables, progress=lambda m: print(f"    {m}", file=sys.stderr))
    _done(started)

    started = _step(2, "feast apply: registering entities, views and the feature service")
    _run_feast(env, ["apply"])
    _done(started)

    started = _step(3, "feast materialize-incremental: offline store -> online store")
    _run_feast(env, ["materialize-incremental", datetime.now(UTC).isoformat()])
    _done(started)

    started = _step(4, "starting the feature server")
    labels = tables["transactions"]
    entities = _pick_requests(labels)
    with FeatureServer(env) as server:
        _done(started)
        body = online_request(entities, feature_service=training.FEATURE_SERVICE)
        started = _step(5, "fetching feature vectors over HTTP")
        print(
            f"      curl -s -X POST {server.url}/get-online-features -d '{json.dumps(body)}'",
            file=sys.stderr,
        )
        response = server.online_features(entities, feature_service=training.FEATURE_SERVICE)
        print("\nOnline feature vectors (the last customer is new: no history yet)")
        print(_vector_table(response, ["customer_id", "merchant_id"]))
        _done(started)

    started = _step(6, "building a point-in-time training set for 5 labelled transactions")
    store = feast_commands.open_store(env)
    sample = labels.sort_values("event_timestamp").iloc[:: max(1, len(labels) // 5)].head(5)
    train = training.training_set(store, sample)
    print("\nTraining rows: features as they were at each transaction's time")
    with pd.option_context("display.width", 200, "display.max_columns", 8):
        print(train.set_index("transaction_id").T.to_string())
    _done(started)

    _step(7, "feature server stopped; done")
    return 0
