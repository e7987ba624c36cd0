"""Stock `feast serve` on Feast's own Redis store, and the answers the platform's server
must give next to it.

The environment's feature_store.yaml names the platform's store, whose import puts the
platform's rules on Feast's read path: a stock server launched with it agrees with the
platform by construction. The reference here runs from a copy that names Feast's `redis`
store instead, on the same connection string, so it reads the keys the platform wrote
(the platform writes Feast's layout).

Two differences are the platform's on purpose, and the comparison expects exactly them,
derived from Feast's answer (the stored event times) and each view's ttl in the registry:

- an entity never written: Feast says PRESENT, with nulls and the epoch as event time;
  the platform says NOT_FOUND.
- a value older than its view's ttl at the time of the read: Feast serves it; the
  platform serves null with OUTSIDE_MAX_AGE and keeps the event time (the training
  set at that time would not see it either). An on-demand feature computed from such a
  value is null, as the repository's view defines it without history.

Everything else must be equal.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import requests
from feast import FeatureStore
from stacks import Stack, patched_environ

from feature_platform.config import environments
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

FEAST_REDIS = "type: redis"
PLATFORM_REDIS = "type: feature_platform.stores.redis_online.RedisOnlineStore"
# redis-py's cluster client refuses any `db` argument; the platform's store drops it.
CLUSTER_DB = ",db=${REDIS_DB}"

FRESH, NEVER_WRITTEN, PAST_TTL = "fresh", "never written", "past ttl"
# The event time crossed the ttl bound while the platform's server was being asked.
AT_TTL = "at the ttl bound"

Cell = tuple[Any, str, str]  # value, status, event time, as the server's JSON has them


def feast_redis_yaml(stack: Stack, directory: Path) -> Path:
    """A copy of the stack's feature_store.yaml whose online store is Feast's `redis`."""
    with stack.active():
        text = environments.feature_store_yaml(stack.env).read_text()
    assert text.count(PLATFORM_REDIS) == 1, "feature_store.yaml names another online store"
    text = text.replace(PLATFORM_REDIS, FEAST_REDIS)
    if stack.settings()["REDIS_TYPE"] == "redis_cluster":
        assert text.count(CLUSTER_DB) == 1, "the connection string's db= item moved"
        text = text.replace(CLUSTER_DB, "")
    path = directory / "feature_store.feast_redis.yaml"
    path.write_text(text)
    return path


def launch_stock(stack: Stack, directory: Path) -> FeatureServer:
    """`feast serve` for the stack on Feast's own Redis store, launched (not yet ready)
    and stopped when the stack closes."""
    yaml_path = feast_redis_yaml(stack, directory)
    with stack.active(), patched_environ({"FEATURE_STORE_YAML": str(yaml_path)}):
        server = FeatureServer(stack.env, stock=True).launch()
    stack.cleanups.append(server.stop)
    return server


def by_name(response: dict[str, Any]) -> dict[str, tuple[list, list, list]]:
    """Feature name -> (values, statuses, event times). Feast orders its columns by string
    hashes, which differ between processes, so position is not part of its contract."""
    names = response["metadata"]["feature_names"]
    return {
        name: (col["values"], col["statuses"], col["event_timestamps"])
        for name, col in zip(names, response["results"], strict=True)
    }


def request_bodies(sizes: generator.Sizes) -> list[dict[str, Any]]:
    """1 to 100 entities, some never written, repeated rows, keys in another order."""
    rng = np.random.default_rng(17)
    bodies: list[dict[str, Any]] = []
    for n in (1, 3, 10, 100):
        customers = rng.integers(1, sizes.customers + 40, n).tolist()  # some never seen
        merchants = rng.integers(1, sizes.merchants + 5, n).tolist()
        amounts = np.round(rng.lognormal(3.5, 1, n), 2).tolist()
        entities = {"customer_id": customers, "merchant_id": merchants, "amount": amounts}
        bodies.append({"feature_service": FEATURE_SERVICE, "entities": entities})
        bodies.append({
            "features": ["merchant_stats:avg_rating", "customer_stats:avg_purchase_30d",
                         "customer_txn_1h:n_txn_1h"],
            "entities": {"customer_id": customers, "merchant_id": merchants},
        })  # fmt: skip
    bodies.append({
        "feature_service": FEATURE_SERVICE,
        "entities": {"amount": [5.5, 5.5, 7.25], "merchant_id": [3, 3, 3],
                     "customer_id": [8, 8, 9]},
    })  # fmt: skip
    return bodies


@dataclass(frozen=True)
class Views:
    """The registry's word on each feature: its view and the view's ttl, or the views an
    on-demand feature is computed from."""

    view_of: dict[str, str]
    ttl_s: dict[str, float]  # 0: never expires
    computed_from: dict[str, list[str]]

    @classmethod
    def of(cls, store: FeatureStore) -> Views:
        views = store.list_feature_views()
        on_demand = store.list_on_demand_feature_views()
        return cls(
            view_of={f.name: v.name for v in views for f in v.features},
            ttl_s={v.name: v.ttl.total_seconds() if v.ttl else 0.0 for v in views},
            computed_from={
                f.name: list(v.source_feature_view_projections)
                for v in on_demand
                for f in v.features
            },
        )


def _epoch_s(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def row_states(
    theirs: dict[str, tuple[list, list, list]], views: Views, read_from: float, read_to: float
) -> dict[str, list[str]]:
    """View -> each row's state, from Feast's event times, for a read by the platform
    that began at `read_from` and ended at `read_to` (epoch seconds)."""
    states: dict[str, list[str]] = {}
    for name, (_values, _statuses, stamps) in theirs.items():
        view = views.view_of.get(name)
        if view is None or view in states:
            continue
        ttl_s = views.ttl_s[view]
        column = []
        for event_s in map(_epoch_s, stamps):
            if event_s == 0:
                column.append(NEVER_WRITTEN)
            elif ttl_s and event_s < read_from - ttl_s:
                column.append(PAST_TTL)
            elif ttl_s and event_s < read_to - ttl_s:
                column.append(AT_TTL)
            else:
                column.append(FRESH)
        states[view] = column
    return states


def _allowed(name: str, row: int, cell: Cell, states: dict[str, list[str]], views: Views) -> list:
    """What the platform may answer where Feast answered `cell`."""
    _value, status, stamp = cell
    view = views.view_of.get(name)
    if view is not None:
        state = states[view][row]
        withheld = [None, "OUTSIDE_MAX_AGE", stamp]
        return {
            FRESH: [list(cell)],
            NEVER_WRITTEN: [[None, "NOT_FOUND", stamp]],
            PAST_TTL: [withheld],
            AT_TTL: [list(cell), withheld],
        }[state]
    if name in views.computed_from:
        missing = [v for v in views.computed_from[name] if v not in states]
        assert not missing, f"{name}: the request must return a feature of {missing}"
        sources = {states[v][row] for v in views.computed_from[name]}
        if PAST_TTL in sources:
            return [[None, status, stamp]]
        if AT_TTL in sources:
            return [list(cell), [None, status, stamp]]
    return [list(cell)]


def differences(
    ours: dict[str, tuple[list, list, list]],
    theirs: dict[str, tuple[list, list, list]],
    views: Views,
    states: dict[str, list[str]],
) -> list[str]:
    """Every cell where the platform's answer is neither Feast's nor Feast's under the
    platform's two rules; empty when they agree."""
    if set(ours) != set(theirs):
        return [f"features: ours {sorted(ours)}, Feast's {sorted(theirs)}"]
    found = []
    for name, columns in theirs.items():
        if name in views.view_of and set(columns[1]) != {"PRESENT"}:
            # Feast's own Redis store has no other status: the reference is not it
            found.append(f"{name}: Feast's statuses {columns[1]}")
        for row, cell in enumerate(zip(*columns, strict=True)):
            served = [column[row] for column in ours[name]]
            allowed = _allowed(name, row, cell, states, views)
            if served not in allowed:
                found.append(f"{name}[{row}]: ours {served}, expected one of {allowed}")
    return found


def post(server: FeatureServer, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{server.url}/get-online-features", json=body, timeout=10)


@dataclass
class Compared:
    problems: list[str]
    states: dict[str, Counter[str]]  # view -> how many rows were in each state


def compare(
    ours: FeatureServer, stock: FeatureServer, body: dict[str, Any], views: Views
) -> Compared:
    """Ask both servers for `body`; the differences beyond the expected ones."""
    theirs = post(stock, body)
    read_from = time.time()
    served = post(ours, body)
    read_to = time.time()
    if not served.status_code == theirs.status_code == 200:
        return Compared([f"status: ours {served.status_code}, Feast's {theirs.status_code}"], {})
    theirs_by_name = by_name(theirs.json())
    states = row_states(theirs_by_name, views, read_from, read_to)
    return Compared(
        differences(by_name(served.json()), theirs_by_name, views, states),
        {view: Counter(column) for view, column in states.items()},
    )
