"""Writes checked against their view's expectations on the way in: under `refuse` a bad
row is a 422 naming feature and rule and nothing is written; under `quarantine` the bad
rows go to the quarantine table, in neither store, and the rest are written;
`feature-platform quarantine` lists them.

`customer_txn_1h` is declared `quarantine` in the repository; the refusing server runs
after its tag is changed to `refuse` in the registry, so the quarantine tests come first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import requests
from compare import served_values
from conftest import AS_OF, SEED
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform.cli import main
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.offline import tables as offline_tables
from feature_platform.quality import database as quality_db
from feature_platform.quality import quarantine
from feature_platform.quality.expectations import POLICY_TAG, QUARANTINE, REFUSE

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
SOURCE = "customer_txn_1h_push"
VIEW = "customer_txn_1h"


@dataclass
class Writing:
    stack: Stack
    server: FeatureServer

    def post(self, path: str, body: dict[str, Any]) -> requests.Response:
        return requests.post(
            f"{self.server.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
            timeout=10,
        )

    def push(self, rows: dict[str, list[Any]]) -> requests.Response:
        return self.post(
            "/push", {"push_source_name": SOURCE, "df": rows, "to": "online_and_offline"}
        )

    def online(self, customers: list[int]) -> list[int | None]:
        return served_values(self.server, f"{VIEW}:n_txn_1h", customers)

    def offline(self, customers: list[int]) -> list[int]:
        table = offline_tables.read(self.stack.settings(), VIEW)
        return sorted(table[table["customer_id"].isin(customers)]["customer_id"].tolist())

    def quarantined(self, customers: list[int]) -> list[dict[str, Any]]:
        entries = quarantine.read(quality_db.for_settings(self.stack.settings()), VIEW, 1000)
        return sorted(
            (e for e in entries if e["row"]["customer_id"] in customers),
            key=lambda e: e["row"]["customer_id"],
        )


@pytest.fixture(scope="module")
def stacks(stack_factory: Callable[..., Stack]) -> Iterator[Callable[[str], Stack]]:
    """A stack per environment, made when first asked for, with the data applied."""
    made: dict[str, Stack] = {}

    def stack(env: str) -> Stack:
        if env not in made:
            made[env] = stack_factory(env, "quality")
            made[env].write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
            made[env].feast("apply")
        return made[env]

    yield stack
    for each in made.values():
        each.close()


@pytest.fixture(scope="module")
def servers(stacks: Callable[[str], Stack]) -> Callable[[str, str], Writing]:
    """A server per environment and policy of customer_txn_1h, started when first asked
    for: `quarantine` as the repository declares it, `refuse` after the view's tag is
    changed in the registry."""
    started: dict[tuple[str, str], Writing] = {}

    def server(env: str, policy: str) -> Writing:
        if (env, policy) not in started:
            stack = stacks(env)
            if policy == REFUSE:
                with stack.active():
                    store = stack.store()
                    view = store.get_feature_view(VIEW)
                    view.tags[POLICY_TAG] = REFUSE
                    store.apply([view])
            started[env, policy] = Writing(stack, stack.server(settings=WRITABLE))
        return started[env, policy]

    return server


@pytest.fixture
def quarantining(env_name: str, servers: Callable[[str, str], Writing]) -> Writing:
    return servers(env_name, QUARANTINE)


@pytest.fixture
def refusing(env_name: str, servers: Callable[[str, str], Writing]) -> Writing:
    return servers(env_name, REFUSE)


def _rows(customers: list[int], counts: list[int], amounts: list[float]) -> dict[str, list[Any]]:
    event = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    return {
        "customer_id": customers,
        "event_timestamp": [event] * len(customers),
        "n_txn_1h": counts,
        "sum_amount_1h": amounts,
    }


def test_a_quarantined_push_writes_the_good_rows_and_sets_the_bad_ones_aside(
    quarantining: Writing,
) -> None:
    good, negative_count, negative_sum = 970_000_001, 970_000_002, 970_000_003
    customers = [good, negative_count, negative_sum]
    response = quarantining.push(_rows(customers, [2, -1, 3], [20.5, 4.0, -7.5]))
    assert response.status_code == 200, response.text

    assert quarantining.online(customers) == [2, None, None]
    assert quarantining.offline(customers) == [good]
    entries = quarantining.quarantined(customers)
    assert [(e["row"]["customer_id"], e["rules"]) for e in entries] == [
        (negative_count, "n_txn_1h: min 0"),
        (negative_sum, "sum_amount_1h: min 0"),
    ]
    assert {(e["feature_view"], e["source"]) for e in entries} == {(VIEW, "push")}
    assert entries[0]["row"]["n_txn_1h"] == -1
    assert entries[0]["row"]["created_timestamp"] is not None


def test_a_push_of_only_bad_rows_writes_nothing(quarantining: Writing) -> None:
    customer = 970_000_011
    response = quarantining.push(_rows([customer], [-5], [1.0]))
    assert response.status_code == 200, response.text
    assert quarantining.online([customer]) == [None]
    assert quarantining.offline([customer]) == []
    assert len(quarantining.quarantined([customer])) == 1


def test_write_to_online_store_quarantines_too(quarantining: Writing) -> None:
    good, bad = 970_000_021, 970_000_022
    body = {"feature_view_name": VIEW, "df": _rows([good, bad], [1, -1], [1.0, 1.0])}
    response = quarantining.post("/write-to-online-store", body)
    assert response.status_code == 200, response.text
    assert quarantining.online([good, bad]) == [1, None]
    [entry] = quarantining.quarantined([bad])
    assert entry["source"] == "write-to-online-store"


def test_the_quarantine_command_lists_the_rows(
    quarantining: Writing, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = 970_000_031
    assert quarantining.push(_rows([customer], [-2], [1.0])).status_code == 200
    stack = quarantining.stack
    with stack.active():
        code = main(["quarantine", stack.env, "--view", VIEW, "--limit", "1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    [entry] = json.loads(out.out)
    assert entry["row"]["customer_id"] == customer
    assert (entry["feature_view"], entry["rules"], entry["source"]) == (
        VIEW,
        "n_txn_1h: min 0",
        "push",
    )
    assert "1 quarantined row(s) of customer_txn_1h" in out.err
    with stack.active():
        assert main(["quarantine", stack.env, "--view", "merchant_stats"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_quarantine_table_it_cannot_write_fails_the_push_and_writes_nothing(
    env_name: str, quarantining: Writing
) -> None:
    """The table held by DDL: the quarantine write gives up after the offline store's
    write timeout, and the good rows are not written either."""
    if env_name != "dev":
        pytest.skip("a PostgreSQL table lock")
    good, bad = 970_000_061, 970_000_062
    settings = quarantining.stack.settings()
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    with psycopg.connect(conninfo) as conn:
        conn.execute(f"LOCK TABLE {quarantine.TABLE} IN ACCESS EXCLUSIVE MODE")
        response = quarantining.push(_rows([good, bad], [1, -1], [1.0, 1.0]))
        conn.rollback()
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "service unavailable"
    # the lock's or the statement's timeout, whichever ends the wait first
    assert body["detail"] in {
        f"quarantine table: {kind}; nothing was written"
        for kind in ("LockNotAvailable", "QueryCanceled")
    }
    assert quarantining.online([good, bad]) == [None, None]
    assert quarantining.offline([good, bad]) == []
    assert quarantining.quarantined([good, bad]) == []


def test_a_refused_push_is_a_422_naming_feature_and_rule(refusing: Writing) -> None:
    good, bad = 970_000_041, 970_000_042
    response = refusing.push(_rows([good, bad], [1, -3], [1.0, 2.0]))
    assert response.status_code == 422, response.text
    assert response.json() == {
        "error": "unprocessable",
        "detail": "expectations not met: customer_txn_1h.n_txn_1h breaks 'min 0' at row 1 "
        "(value -3)",
    }
    assert refusing.online([good, bad]) == [None, None]
    assert refusing.offline([good, bad]) == []
    assert refusing.quarantined([good, bad]) == []


def test_a_good_push_is_accepted(refusing: Writing) -> None:
    customer = 970_000_051
    response = refusing.push(_rows([customer], [4], [44.0]))
    assert response.status_code == 200, response.text
    assert refusing.online([customer]) == [4]
    assert refusing.offline([customer]) == [customer]
    assert refusing.quarantined([customer]) == []
