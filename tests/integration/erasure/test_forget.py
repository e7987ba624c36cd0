"""`feature-platform forget`: a customer's values found in every place the platform keeps
them (offline rows, the mirror, the online store, the served vectors, the quarantine) by
a dry run that changes nothing, then removed by `--yes`, recorded in the audit table, with
the training set that holds the customer named; a materialization, a mirror refresh and a
rebuild afterwards bring nothing back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import requests
from compare import served_values
from conftest import AS_OF, SEED, deploy
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.erasure import forget
from feature_platform.materialization import rebuild
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import database as quality_db
from feature_platform.quality import quarantine

SIZES = generator.Sizes(customers=60, merchants=10, days=3, transactions=400)
SERVICE = "fraud_detection_v1"
SETTINGS = {"FEATURE_SERVER_SERVED_VECTORS_FLUSH_SECONDS": "0.2", **WRITABLE}
VIEWS = ("customer_stats", "customer_txn_1h")
# A push here takes milliseconds: the wait for pushes under way can be short.
SETTLE = ("--settle-seconds", "2")


@dataclass
class World:
    stack: Stack
    server: FeatureServer
    customer: int
    other: int
    spare: int  # for the race
    training_set: Path


def _forget(stack: Stack, customer: int, capsys: Any, *flags: str) -> tuple[int, Any]:
    capsys.readouterr()
    with stack.active():
        code = cli.main(["forget", stack.env, "--entity", f"customer_id={customer}", *flags])
    out, _ = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None


def _rows(report: dict[str, Any]) -> dict[tuple[str, str], int]:
    return {(p["kind"], p["where"]): p["rows"] for p in report["places"]}


def _offline(stack: Stack, customer: int) -> dict[str, int]:
    settings = stack.settings()
    return {
        view: int((offline_tables.read(settings, view)["customer_id"] == customer).sum())
        for view in VIEWS
    }


def _online(world: World, customers: list[int]) -> list[Any]:
    return served_values(world.server, "customer_stats:avg_purchase_30d", customers)


def _serve(world_server: FeatureServer, customers: list[int]) -> None:
    body = {"feature_service": SERVICE, "entities": {
        "customer_id": customers, "merchant_id": [1] * len(customers),
        "amount": [10.0] * len(customers)}}  # fmt: skip
    response = requests.post(f"{world_server.url}/get-online-features", json=body, timeout=10)
    assert response.status_code == 200, response.text


def _push(server: FeatureServer, rows: dict[str, list[Any]]) -> requests.Response:
    return requests.post(
        f"{server.url}/push",
        json={"push_source_name": "customer_txn_1h_push", "df": rows, "to": "online_and_offline"},
        headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def worlds(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], World]:
    made: dict[str, World] = {}

    def world(env: str) -> World:
        if env in made:
            return made[env]
        tmp = tmp_path_factory.mktemp(f"forget-{env}")
        extra = (
            {"SERVED_VECTORS_PATH": "postgresql:served_vectors",
             "OFFLINE_MIRROR_DIR": str(tmp / "mirror")}
            if env == "dev" else {"SERVED_VECTORS_PATH": str(tmp / "vectors")}
        )  # fmt: skip
        stack = stack_factory(env, "forget", extra)
        tables = generator.generate(SIZES, seed=SEED, as_of=AS_OF)
        deploy(stack, tables)
        both = set(tables["customer_stats"]["customer_id"]) & set(
            tables["customer_txn_1h"]["customer_id"]
        )
        customer, other, spare = sorted(both)[:3]
        server = stack.server(settings=SETTINGS)
        _serve(server, [customer, other])
        # the customer's pushed counters: a good row, online and offline, and a bad one,
        # quarantined
        events = [(datetime.now(UTC) - timedelta(minutes=m)).isoformat() for m in (5, 4)]
        pushed = {"customer_id": [customer, customer], "event_timestamp": events,
                  "n_txn_1h": [2, -1], "sum_amount_1h": [1.0, 1.0]}  # fmt: skip
        response = _push(server, pushed)
        assert response.status_code == 200, response.text
        labels = pd.DataFrame({"customer_id": [customer, other], "merchant_id": [1, 1],
                               "amount": [10.0, 10.0],
                               "event_timestamp": [pd.Timestamp.now("UTC")] * 2})  # fmt: skip
        labels.to_parquet(tmp / "labels.parquet")
        output = tmp / "training.parquet"
        with stack.active():
            assert cli.main(["training-set", env, "--labels", str(tmp / "labels.parquet"),
                             "--output", str(output), "--name", "fraud-model-9"]) == 0  # fmt: skip
        made[env] = World(stack, server, customer, other, spare, output)
        return made[env]

    return world


def test_a_dry_run_finds_the_customer_everywhere_and_changes_nothing(
    env_name: str, worlds: Callable[[str], World], capsys: Any
) -> None:
    world = worlds(env_name)
    deadline = time.monotonic() + 20  # the served vectors are written off the request path
    while time.monotonic() < deadline:
        code, report = _forget(world.stack, world.customer, capsys)
        assert code == 0
        served = [r for (kind, _), r in _rows(report).items() if kind == "served vectors"]
        if served and served[0] > 0:
            break
        time.sleep(0.3)
    rows = _rows(report)
    assert report["removed"] is False
    for view in VIEWS:
        assert rows[("online", view)] == 1, rows
    offline = {where: n for (kind, where), n in rows.items() if kind == "offline"}
    assert sorted(offline.values()) == sorted(_offline(world.stack, world.customer).values())
    assert all(offline.values())
    assert [n for (kind, _), n in rows.items() if kind == "served vectors"] == [1]
    assert rows[("quarantine", quarantine.TABLE)] == 1
    if env_name == "dev":
        assert {where for kind, where in rows if kind == "mirror"} == set(VIEWS)
        assert all(n > 0 for (kind, _), n in rows.items() if kind == "mirror")
    [named] = report["training_sets"]
    assert (named["name"], named["holds"]) == ("fraud-model-9", True)
    # nothing changed
    assert _online(world, [world.customer])[0] is not None
    assert all(_offline(world.stack, world.customer).values())


def test_forgetting_removes_it_everywhere_and_records_who_asked(
    env_name: str, worlds: Callable[[str], World], capsys: Any
) -> None:
    world = worlds(env_name)
    before_other = _online(world, [world.other])
    _, found = _forget(world.stack, world.customer, capsys)
    code, report = _forget(world.stack, world.customer, capsys, "--yes", *SETTLE,
                           "--requested-by", "privacy-desk")  # fmt: skip
    assert code == 0 and report["removed"] is True
    # what was removed is what the dry run found, place by place (in Redis both views'
    # values are in one hash, removed once)
    assert _rows(report) == _rows(found)
    assert sum(_rows(report).values()) > 0
    code, again = _forget(world.stack, world.customer, capsys)
    assert code == 0 and set(_rows(again).values()) == {0}

    assert _online(world, [world.customer]) == [None]
    assert _online(world, [world.other]) == before_other  # only the customer
    assert set(_offline(world.stack, world.customer).values()) == {0}
    target = quality_db.for_settings(world.stack.settings())
    assert not [e for e in quarantine.read(target, None, 1000)
                if e["row"].get("customer_id") == world.customer]  # fmt: skip
    [audit] = forget.audit_log(target, 1)
    assert (audit["environment"], audit["requested_by"]) == (env_name, "privacy-desk")
    assert audit["entity"] == {"customer_id": world.customer}
    assert {(p["kind"], p["where"]) for p in audit["removed"]} == set(_rows(report))
    assert [t["name"] for t in audit["training_sets"]] == ["fraud-model-9"]

    # Nothing brings it back: a materialization, a rebuild of the online store, a
    # training set (which refreshes the mirror).
    world.stack.materialize()
    with world.stack.active():
        store = world.stack.store()
        rebuild.rebuild(store, store.list_feature_views(), datetime.now(UTC), lambda _: None)
    assert _online(world, [world.customer]) == [None]
    now = pd.Timestamp.now("UTC")
    labels = pd.DataFrame({"customer_id": [world.customer], "merchant_id": [1],
                           "amount": [10.0], "event_timestamp": [now]})  # fmt: skip
    path = world.training_set.with_name("after.parquet")
    labels.to_parquet(world.training_set.with_name("labels-after.parquet"))
    with world.stack.active():
        assert cli.main(["training-set", env_name, "--labels",
                         str(world.training_set.with_name("labels-after.parquet")),
                         "--output", str(path)]) == 0  # fmt: skip
    after = pd.read_parquet(path)
    assert after[["avg_purchase_30d", "n_txn_1h"]].isna().all().all()
    code, last = _forget(world.stack, world.customer, capsys)
    assert set(_rows(last).values()) == {0}


@pytest.mark.parametrize(
    ("pair", "said"),
    [
        ("nobody=1", "nobody is no entity's join key (known: customer_id, merchant_id)"),
        ("customer_id=abc", "customer_id is a whole number, got 'abc'"),
        ("customer_id", "--entity takes KEY=VALUE, got 'customer_id'"),
    ],
)
def test_a_bad_entity_is_a_clear_error(
    worlds: Callable[[str], World], capsys: Any, pair: str, said: str
) -> None:
    world = worlds("local")
    capsys.readouterr()
    with world.stack.active():
        code = cli.main(["forget", "local", "--entity", pair])
    _, err = capsys.readouterr()
    assert code == 2 and said in err


def test_pushes_racing_the_forget_leave_nothing_behind(
    worlds: Callable[[str], World], capsys: Any
) -> None:
    """Pushes of the customer run before, during and after the forget: those that passed
    the server's check before the tombstones are deleted with the rest, the later ones
    are dropped, and nothing of the customer is left, offline or online."""
    world = worlds("dev")
    stop = threading.Event()
    statuses: list[int] = []

    def pushing() -> None:
        deadline = time.monotonic() + 90
        while not stop.is_set() and time.monotonic() < deadline and len(statuses) < 5_000:
            event = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
            rows = {"customer_id": [world.spare], "event_timestamp": [event],
                    "n_txn_1h": [len(statuses) % 7], "sum_amount_1h": [3.0]}  # fmt: skip
            statuses.append(_push(world.server, rows).status_code)

    pusher = threading.Thread(target=pushing)
    pusher.start()
    try:
        while len(statuses) < 5 and pusher.is_alive():
            time.sleep(0.05)
        before = len(statuses)
        code, report = _forget(world.stack, world.spare, capsys, "--yes", *SETTLE)
        during = len(statuses) - before
        time.sleep(1)  # pushes after the forget too
    finally:
        stop.set()
        pusher.join()
    assert code == 0 and report["removed"] is True
    with capsys.disabled():
        print(f"pushes: {before} before the forget, {during} during it, {len(statuses)} in all")
    assert before >= 5 and during > 0 and set(statuses) == {200}
    assert _online(world, [world.spare]) == [None]
    assert set(_offline(world.stack, world.spare).values()) == {0}
    code, again = _forget(world.stack, world.spare, capsys)
    assert code == 0 and set(_rows(again).values()) == {0}
