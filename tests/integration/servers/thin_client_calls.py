"""What a notebook does with the thin-client feature_store.yaml, as one process.

Run by test_thin_client.py in a subprocess whose environment holds no database or Redis
setting: `python thin_client_calls.py WORK_DIR`. WORK_DIR/input.json lists the steps, each
naming the directory of its client's feature_store.yaml, its operation and its input;
output.json gets one outcome per step (its result, or the error a user would see), and
training.parquet the training set. One process: Feast's import is the slow part.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore

from feature_platform.training import FEATURE_SERVICE, training_set


def read(store: FeatureStore, work: Path, given: dict[str, Any]) -> dict[str, Any]:
    online = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=given["entity_rows"]
    ).to_dict()
    training_set(store, pd.read_parquet(work / "labels.parquet")).to_parquet(
        work / "training.parquet"
    )
    return {
        "feature_views": sorted(v.name for v in store.list_feature_views()),
        "feature_services": sorted(s.name for s in store.list_feature_services()),
        "entities": sorted(e.name for e in store.list_entities()),
        "online": online,
    }


def write(store: FeatureStore, work: Path, given: dict[str, Any]) -> dict[str, Any]:
    def frame(rows: dict[str, list[Any]]) -> pd.DataFrame:
        df = pd.DataFrame(rows)
        for column in ("event_timestamp", "created_timestamp"):
            df[column] = pd.to_datetime(df[column], utc=True)
        return df

    store.write_to_online_store(given["view"], frame(given["written"]))
    store.push(given["push_source"], frame(given["pushed"]))
    return {"written": True}


def online_only(store: FeatureStore, work: Path, given: dict[str, Any]) -> dict[str, Any]:
    return store.get_online_features(
        features=given["features"], entity_rows=given["entity_rows"]
    ).to_dict()


def listing(store: FeatureStore, work: Path, given: dict[str, Any]) -> dict[str, Any]:
    return {"feature_views": sorted(v.name for v in store.list_feature_views())}


OPERATIONS = {"read": read, "write": write, "online": online_only, "list": listing}


def main(work: Path) -> int:
    """Each step of input.json with its own client file; one outcome per step."""
    outcomes: list[dict[str, Any]] = []
    for step in json.loads((work / "input.json").read_text()):
        try:
            store = FeatureStore(repo_path=str(work / step["config"]))
            outcomes.append({"result": OPERATIONS[step["operation"]](store, work, step)})
        except Exception as exc:  # the test reads this: the error a user would see
            outcomes.append({"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:800]})
    (work / "output.json").write_text(json.dumps(outcomes, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
