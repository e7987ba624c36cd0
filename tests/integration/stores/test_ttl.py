"""A view's ttl holds online exactly as offline: past it, a value is null on every path.

The server is read at an instant t, and the training row for the same keys is built
with t as its label time: they must be equal, value for value, for values just inside
and just outside each view's ttl, on the Redis fast path, on Feast's own path
(`full_feature_names`) and on the SQLite store of `local`.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import pytest
import requests
from compare import feature_types, offline_rows
from hypothesis import given, settings
from hypothesis import strategies as st
from property_settings import COSTLY_EXAMPLES
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform.devtools.launcher import FeatureServer
from feature_platform.training import FEATURE_SERVICE

VIEWS = {
    "customer_stats": "customer_id",
    "merchant_stats": "merchant_id",
    "customer_txn_1h": "customer_id",
}
TTL_S = {"customer_stats": 2 * 86400, "merchant_stats": 3 * 86400, "customer_txn_1h": 7200}
TXN_FEATURES = ["customer_txn_1h:n_txn_1h", "customer_txn_1h:sum_amount_1h"]
# One feature per view whose status is checked.
STATUS_PROBE = {
    "customer_stats": "avg_purchase_30d",
    "merchant_stats": "avg_rating",
    "customer_txn_1h": "n_txn_1h",
}
ODFV_FEATURES = {"amount_to_avg_30d", "amount_over_avg_30d"}
# Each generated example gets entities no earlier example wrote online.
_first_entity = itertools.count(950_000_000, 1_000)


@pytest.fixture(scope="module", params=["local", "dev"])
def ttl_stack(request: pytest.FixtureRequest, stack_factory: Callable[..., Stack]) -> Stack:
    stack = stack_factory(request.param, "ttl")
    stack.write(_tables([], datetime.now(UTC), 0))
    stack.feast("apply")
    ttls = {v.name: int(v.ttl.total_seconds()) for v in stack.store().list_feature_views()}
    assert ttls == TTL_S, "the feature repository's ttls changed: update TTL_S"
    return stack


@pytest.fixture(scope="module")
def ttl_server(ttl_stack: Stack) -> FeatureServer:
    return ttl_stack.server(settings=WRITABLE)


def _read(server: FeatureServer, entities: dict[str, list[Any]], full_names: bool) -> dict:
    body: dict[str, Any] = {"entities": entities, "feature_service": FEATURE_SERVICE}
    if full_names:
        body["full_feature_names"] = True
    response = requests.post(f"{server.url}/get-online-features", json=body, timeout=10)
    response.raise_for_status()
    return dict(response.json())


def _columns(response: dict) -> dict[str, dict[str, list[Any]]]:
    """Feature name (without a view prefix) -> its values and statuses."""
    names = response["metadata"]["feature_names"]
    return {
        name.split("__", 1)[-1]: {"values": col["values"], "statuses": col["statuses"]}
        for name, col in zip(names, response["results"], strict=True)
    }


def test_a_value_past_its_ttl_is_withheld_on_every_path(
    ttl_stack: Stack, ttl_server: FeatureServer
) -> None:
    """The skew as first reported: a pushed counter whose event time is about to leave
    its 2 h ttl is served, and once past it is null with OUTSIDE_MAX_AGE."""
    customer = 940_000_001
    event = datetime.now(UTC) - timedelta(hours=2) + timedelta(seconds=3)
    ttl_server.push(
        "customer_txn_1h_push",
        {
            "customer_id": [customer],
            "event_timestamp": [event.isoformat()],
            "created_timestamp": [event.isoformat()],
            "n_txn_1h": [3],
            "sum_amount_1h": [42.5],
        },
        token=WRITE_TOKEN,
    )
    fresh = ttl_server.online_features({"customer_id": [customer]}, features=TXN_FEATURES)
    fresh_columns = _columns(fresh)
    assert fresh_columns["n_txn_1h"] == {"values": [3], "statuses": ["PRESENT"]}

    while datetime.now(UTC) <= event + timedelta(hours=2, seconds=0.2):
        time.sleep(0.1)
    entities = {"customer_id": [customer], "merchant_id": [1], "amount": [10.0]}
    for full_names in (False, True):
        stale = _columns(_read(ttl_server, entities, full_names))
        for name in ("n_txn_1h", "sum_amount_1h"):
            assert stale[name] == {"values": [None], "statuses": ["OUTSIDE_MAX_AGE"]}, (
                f"{name}, full_feature_names={full_names}"
            )
    stale = _columns(ttl_server.online_features({"customer_id": [customer]}, features=TXN_FEATURES))
    assert stale["sum_amount_1h"] == {"values": [None], "statuses": ["OUTSIDE_MAX_AGE"]}


# -- generated histories around every view's ttl ---------------------------------------

# Seconds from the ttl boundary at the read instant: negative is inside the ttl.
_offsets = st.integers(min_value=-90_000, max_value=90_000).map(lambda ms: ms / 1000)
_case = st.fixed_dictionaries({view: st.lists(_offsets, min_size=0, max_size=2) for view in VIEWS})


def _tables(
    cases: list[dict[str, list[float]]], read_at: datetime, first: int, resolution: str = "us"
) -> dict[str, pd.DataFrame]:
    """Customer and merchant `first + i` for case i; each row's event time is its
    offset beyond the view's ttl at `read_at`, floored to `resolution`."""
    rows: dict[str, list[dict[str, Any]]] = {view: [] for view in VIEWS}
    for i, case in enumerate(cases):
        for view, offsets in case.items():
            for j, offset in enumerate(offsets):
                event = pd.Timestamp(read_at) - pd.Timedelta(seconds=TTL_S[view] + offset)
                event = event.floor(resolution)
                rows[view].append(
                    {
                        VIEWS[view]: first + i,
                        "event_timestamp": event,
                        "created_timestamp": event + pd.Timedelta(seconds=1),
                        "seq": j,
                    }
                )
    values = {
        "customer_stats": lambda r: {
            "avg_purchase_30d": 10.0 + r["seq"],
            "n_purchases_7d": 2,
            "n_purchases_30d": 9,
            "account_age_days": 400,
            "home_country": "NL",
        },
        "merchant_stats": lambda r: {
            "avg_rating": 3.5 + r["seq"],
            "n_disputes_30d": 1,
            "n_sales_30d": 50,
            "category": "travel",
        },
        "customer_txn_1h": lambda r: {"n_txn_1h": 1 + r["seq"], "sum_amount_1h": 5.5 + r["seq"]},
    }
    tables = {}
    for view, view_rows in rows.items():
        full = [{**r, **values[view](r)} for r in view_rows]
        columns = [VIEWS[view], "event_timestamp", "created_timestamp", *values[view]({"seq": 0})]
        frame = pd.DataFrame(full, columns=[*columns, "seq"]).drop(columns="seq")
        frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        frame["created_timestamp"] = pd.to_datetime(frame["created_timestamp"], utc=True)
        tables[view] = frame.astype({VIEWS[view]: "int64"})
    return tables


def _ambiguous(tables: dict[str, pd.DataFrame], t0: datetime, t1: datetime) -> set[int]:
    """Entities whose newest row crossed its ttl while the read was in flight."""
    out: set[int] = set()
    for view, frame in tables.items():
        if frame.empty:
            continue
        newest = frame.groupby(VIEWS[view])["event_timestamp"].max()
        ttl = pd.Timedelta(seconds=TTL_S[view])
        crossing = newest[(newest >= pd.Timestamp(t0) - ttl) & (newest < pd.Timestamp(t1) - ttl)]
        out.update(int(e) for e in crossing.index)
    return out


@settings(COSTLY_EXAMPLES, max_examples=3)
@given(cases=st.lists(_case, min_size=5, max_size=40))
def test_online_equals_training_around_the_ttl(
    ttl_stack: Stack, ttl_server: FeatureServer, cases: list[dict[str, list[float]]]
) -> None:
    store = ttl_stack.store()
    # The read happens at read_at (or a little later, which moves every case alike).
    read_at = datetime.now(UTC) + timedelta(seconds=15)
    first = next(_first_entity)
    # Feast's SQLite store keeps event times in whole seconds (README: the ttl rule).
    tables = _tables(cases, read_at, first, "s" if ttl_stack.env == "local" else "us")
    ttl_stack.write(tables)
    for view in store.list_feature_views():
        store.materialize(read_at - view.ttl - timedelta(minutes=5), datetime.now(UTC), [view.name])
    while datetime.now(UTC) < read_at:
        time.sleep(0.2)

    ids = [first + i for i in range(len(cases))]
    entities = {"customer_id": ids, "merchant_id": ids, "amount": [25.0] * len(ids)}
    types = feature_types(store)
    for full_names in (False, True):
        t0 = datetime.now(UTC)
        served = _columns(_read(ttl_server, entities, full_names))
        t1 = datetime.now(UTC)
        labels = pd.DataFrame(entities).assign(event_timestamp=pd.Timestamp(t0))
        trained = offline_rows(ttl_stack.training_set(labels), types)
        skip = _ambiguous(tables, t0, t1)
        compared = 0
        for i, entity in enumerate(ids):
            if entity in skip:
                continue
            for name in types:
                if full_names and name in ODFV_FEATURES:
                    continue  # Feast drops on-demand outputs under full_feature_names
                value, status = served[name]["values"][i], served[name]["statuses"][i]
                assert value == trained[i][name], (
                    f"case {i} {name}: served {value!r} ({status}), trained {trained[i][name]!r}"
                    f", full_feature_names={full_names}"
                )
                compared += 1
        assert compared >= len(ids) * len(types) // 2
        # Withheld values say why: OUTSIDE_MAX_AGE, not NOT_FOUND.
        for view, by_entity in _expected_statuses(tables, t0).items():
            name = STATUS_PROBE[view]
            for i, entity in enumerate(ids):
                if entity in by_entity and entity not in skip:
                    got = served[name]["statuses"][i]
                    assert got == by_entity[entity], f"case {i} {view}: {got}"


def _expected_statuses(tables: dict[str, pd.DataFrame], at: datetime) -> dict[str, dict[int, str]]:
    """Per view and entity with rows: PRESENT inside the ttl, OUTSIDE_MAX_AGE past it."""
    out: dict[str, dict[int, str]] = {}
    for view, frame in tables.items():
        newest = frame.groupby(VIEWS[view])["event_timestamp"].max()
        limit = pd.Timestamp(at) - pd.Timedelta(seconds=TTL_S[view])
        out[view] = {
            int(e): ("PRESENT" if ts >= limit else "OUTSIDE_MAX_AGE") for e, ts in newest.items()
        }
    return out
