"""No training/serving skew: the feature server answers what a training set holds."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
from compare import feature_types, offline_rows, online_rows
from conftest import SIZES
from stacks import Stack

from feature_platform.checks.comparison import mismatches
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

UNKNOWN_CUSTOMERS = [10_000_001, 10_000_002, 10_000_003]


def _requests(n: int = 150, seed: int = 3) -> pd.DataFrame:
    """Distinct (customer, merchant) pairs: known, new and never-seen customers,
    every merchant including the ones whose snapshots stopped."""
    rng = np.random.default_rng(seed)
    customers = rng.choice(np.arange(1, SIZES.customers + 1), n - len(UNKNOWN_CUSTOMERS))
    customers = np.concatenate([customers, UNKNOWN_CUSTOMERS])
    merchants = rng.integers(1, SIZES.merchants + 1, n)
    df = pd.DataFrame({"customer_id": customers, "merchant_id": merchants})
    df = df.drop_duplicates().reset_index(drop=True)
    df["amount"] = np.round(rng.lognormal(3.6, 0.8, len(df)), 2)
    df.insert(0, "request_id", np.arange(len(df)))
    return df


def _online(server: FeatureServer, requests: pd.DataFrame) -> dict:
    entities = {c: requests[c].tolist() for c in ("customer_id", "merchant_id", "amount")}
    return server.online_features(entities, feature_service=FEATURE_SERVICE)


def _offline(stack: Stack, requests: pd.DataFrame, at: datetime) -> pd.DataFrame:
    labels = requests.assign(event_timestamp=pd.Timestamp(at))
    return stack.training_set(labels)


def _read_and_train(
    stack: Stack, server: FeatureServer, requests: pd.DataFrame, types: dict
) -> tuple[list, list]:
    """The served rows and the training rows at the instant of the read. Online values
    expire by ttl at the read time, so training is asked for at the read's start and its
    end; if a value expired in between, the read is repeated."""
    for _ in range(3):
        started = datetime.now(UTC)
        served = online_rows(_online(server, requests), types)
        finished = datetime.now(UTC)
        trained = offline_rows(_offline(stack, requests, started), types)
        if trained == offline_rows(_offline(stack, requests, finished), types):
            return served, trained
    raise AssertionError("values kept expiring during every read")


def test_server_vectors_equal_training_rows(deployed: Stack, server: FeatureServer) -> None:
    requests = _requests()
    types = feature_types(deployed.store())
    served, trained = _read_and_train(deployed, server, requests, types)

    assert len(served) == len(trained) == len(requests)
    found = mismatches(served, trained, types)
    assert found == [], f"the first of {len(found)}: {found[:10]}"
    # The comparison covered real values, not only nulls.
    present = sum(v is not None for row in served for v in row.values())
    assert present > len(requests) * len(types) // 2


def test_local_and_dev_agree(
    deployed_local: Stack,
    deployed_dev: Stack,
    server_local: FeatureServer,
    server_dev: FeatureServer,
    generated_tables: dict[str, pd.DataFrame],
) -> None:
    types = feature_types(deployed_local.store())
    requests = _requests(seed=5)
    assert online_rows(_online(server_local, requests), types) == online_rows(
        _online(server_dev, requests), types
    )

    labels = generated_tables["transactions"].sample(400, random_state=1)
    local_set = deployed_local.training_set(labels)
    dev_set = deployed_dev.training_set(labels)
    assert len(local_set) == len(dev_set) == len(labels)
    assert local_set["event_timestamp"].tolist() == dev_set["event_timestamp"].tolist()
    assert offline_rows(local_set, types) == offline_rows(dev_set, types)
