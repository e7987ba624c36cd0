"""The main job, end to end, over an environment an earlier run left behind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from compare import feature_types, materialized_at, offline_rows
from stacks import Stack

from feature_platform.devtools import demo, generator

SIZES = generator.Sizes(customers=60, merchants=8, days=6, transactions=400)


def test_demo_over_stale_data_serves_what_it_generated(
    stack_factory: Callable[..., Stack], capsys: pytest.CaptureFixture[str]
) -> None:
    """On dev (local's end to end run is the fresh checkout's, below)."""
    env_name = "dev"
    stack = stack_factory(env_name, "demo")
    # An earlier run with other data at the same timestamps: Feast would keep these
    # online values, since it skips writes that are not newer.
    stale = generator.generate(SIZES, seed=99, as_of=generator.default_as_of())
    stack.write(stale)
    stack.feast("apply")
    stack.materialize(datetime.now(UTC))

    with stack.active():
        assert demo.run(env_name, SIZES) == 0
    out = capsys.readouterr().out
    assert "Online feature vectors" in out and "Training rows" in out
    assert f"Skew check of {env_name}: consistent" in out
    # the shift injected on purpose is reported by name, and taken back out
    assert "customer_stats.avg_purchase_30d" in out.split("Drift, amounts in cents")[1]
    assert (
        "customer_stats.avg_purchase_30d"
        not in out.split("Drift, as generated")[1].split("Drift, amounts in cents")[0]
    )

    store = stack.store()
    types = feature_types(store)
    stored = [n for n in types if not n.startswith("amount_")]
    customers = list(range(1, SIZES.customers + 1))
    entities = [{"customer_id": c, "merchant_id": 1 + c % SIZES.merchants} for c in customers]
    online = store.get_online_features(
        features=store.get_feature_service("fraud_detection_v1"),
        entity_rows=[{**e, "amount": 10.0} for e in entities],
    ).to_dict()
    labels = pd.DataFrame(entities).assign(amount=10.0, event_timestamp=materialized_at(store))
    label_order = labels.assign(order=range(len(labels)))
    trained = offline_rows(
        stack.training_set(label_order).sort_values("order"), {n: types[n] for n in stored}
    )
    served = [{n: online[n][i] for n in stored} for i in range(len(entities))]
    assert served == trained


def test_demo_on_a_fresh_checkout(stack_factory: Callable[..., Stack]) -> None:
    """Nothing generated yet, not even the local data directory. Run as `make demo` runs
    it: the output carries no warning a user cannot act on, and the sample training rows
    show a value for every feature."""
    stack = stack_factory("local", "fresh")
    assert not Path(stack.overrides["PLATFORM_DATA_DIR"]).exists()
    sizes = [f"--{name}={value}" for name, value in vars(SIZES).items()]
    with stack.active():
        done = subprocess.run(
            [sys.executable, "-m", "feature_platform", "demo", "local", *sizes],
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Warning" not in output, [line for line in output.splitlines() if "Warning" in line]
    rows = done.stdout[done.stdout.index("Training rows") :].split("\n\n")[0].splitlines()[1:]
    empty = [row.split()[0] for row in rows if {"NaN", "None"} & set(row.split()[1:])]
    assert len(rows) > 10 and not empty, f"features without a value: {empty}"
