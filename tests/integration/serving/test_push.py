"""Pushes reach training: `/push` to the offline store, offline first, all or none.

Each environment gets a stack of its own: these tests add rows to the offline table,
rename it and lock it, which the shared stacks' comparisons must never see.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
import requests
from compare import served_values
from conftest import AS_OF, SEED
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.offline import tables as offline_tables

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
SOURCE = "customer_txn_1h_push"
TABLE = "customer_txn_1h"
LEAKS = ("Traceback", 'File "', "postgresql", "psycopg", "password", f"{TABLE}_away")


@dataclass
class Pushing:
    stack: Stack
    server: FeatureServer
    server_log: Path

    def push(self, rows: dict[str, list[Any]], to: str, timeout_s: float = 10) -> requests.Response:
        return requests.post(
            f"{self.server.url}/push",
            json={"push_source_name": SOURCE, "df": rows, "to": to},
            headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
            timeout=timeout_s,
        )

    def online(self, customers: list[int]) -> list[int | None]:
        """n_txn_1h as served for each customer (None: not found)."""
        return served_values(self.server, "customer_txn_1h:n_txn_1h", customers)

    def offline(self, customers: list[int]) -> pd.DataFrame:
        table = offline_tables.read(self.stack.settings(), TABLE)
        return table[table["customer_id"].isin(customers)].sort_values("n_txn_1h")

    def postgres(self) -> psycopg.Connection:
        settings = self.stack.settings()
        return psycopg.connect(offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"]))


@contextmanager
def _deployed(stack: Stack, log_dir: Path) -> Iterator[Pushing]:
    stack.write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
    stack.feast("apply")
    server_log = log_dir / "server.log"
    with server_log.open("wb") as log:
        yield Pushing(stack, stack.server(settings=WRITABLE, log=log), server_log)
        stack.close()


def _pushing_in(env: str) -> Callable[..., Iterator[Pushing]]:
    """A module fixture: `env` deployed in a stack of its own, with a server."""

    @pytest.fixture(scope="module")
    def fixture(
        stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Pushing]:
        with _deployed(stack_factory(env, "push"), tmp_path_factory.mktemp("log")) as pushing:
            yield pushing

    return fixture


pushing_local = _pushing_in("local")
pushing_dev = _pushing_in("dev")


@pytest.fixture
def pushing(env_name: str, request: pytest.FixtureRequest) -> Pushing:
    stack: Pushing = request.getfixturevalue(f"pushing_{env_name}")
    return stack


def _now() -> datetime:
    return datetime.now(UTC)


def _rows(
    customers: list[int], counts: list[int], event: datetime, created: datetime | None = None
) -> dict[str, list[Any]]:
    rows: dict[str, list[Any]] = {
        "customer_id": customers,
        "event_timestamp": [event.isoformat()] * len(customers),
        "n_txn_1h": counts,
        "sum_amount_1h": [count * 10.5 for count in counts],
    }
    if created is not None:
        rows["created_timestamp"] = [created.isoformat()] * len(customers)
    return rows


def _labels(customer: int, times: list[datetime]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [customer] * len(times),
            "merchant_id": [1] * len(times),
            "event_timestamp": [pd.Timestamp(t) for t in times],
            "amount": [10.0] * len(times),
        }
    )


@contextmanager
def _offline_table_away(pushing: Pushing) -> Iterator[None]:
    """The push source's table renamed (dev) or its parquet file moved (local)."""
    settings = pushing.stack.settings()
    if pushing.stack.env == "local":
        path = offline_tables.parquet_path(settings, TABLE)
        away = path.with_name(f"{TABLE}_away.parquet")
        path.rename(away)
        try:
            yield
        finally:
            away.rename(path)
        return
    with pushing.postgres() as conn:
        conn.execute(f"ALTER TABLE {TABLE} RENAME TO {TABLE}_away")
        conn.commit()
        try:
            yield
        finally:
            conn.execute(f"ALTER TABLE {TABLE}_away RENAME TO {TABLE}")
            conn.commit()


def _assert_unavailable(response: requests.Response) -> None:
    assert response.status_code == 503, response.text
    assert set(response.json()) == {"error", "detail"}
    assert "nothing was written" in response.json()["detail"]
    for leak in LEAKS:
        assert leak not in response.text


def test_a_push_to_both_stores_is_served_and_in_the_next_training_set(pushing: Pushing) -> None:
    customer = 960_000_001
    event = _now() - timedelta(minutes=5)
    # The client claims the value existed since its event time.
    response = pushing.push(_rows([customer], [7], event, created=event), "online_and_offline")
    assert response.status_code == 200, response.text
    after = _now()

    assert pushing.online([customer]) == [7]
    before_receipt = event + timedelta(seconds=1)
    training = pushing.stack.training_set(_labels(customer, [before_receipt, after]))
    assert training["n_txn_1h"].iloc[1] == 7
    assert training["sum_amount_1h"].iloc[1] == 73.5
    # Before the server received it the value existed nowhere: no label may see it.
    assert pd.isna(training["n_txn_1h"].iloc[0])


def test_the_creation_time_is_when_the_server_received_the_row(pushing: Pushing) -> None:
    claimed, omitted, online_only = 960_000_011, 960_000_012, 960_000_013
    event = _now() - timedelta(minutes=1)
    sent = _now()
    past = _rows([claimed], [1], event, created=event - timedelta(days=3))
    assert pushing.push(past, "online_and_offline").status_code == 200
    assert pushing.push(_rows([omitted], [2], event), "online_and_offline").status_code == 200
    received = _now()

    stored = pushing.offline([claimed, omitted])
    assert stored["customer_id"].tolist() == [claimed, omitted]
    for created in stored["created_timestamp"]:
        assert pd.Timestamp(sent) <= created <= pd.Timestamp(received)
    assert (stored["event_timestamp"] == pd.Timestamp(event).floor("us")).all()

    # `to: online` needs no creation time either, and writes nothing offline.
    assert pushing.push(_rows([online_only], [3], event), "online").status_code == 200
    assert pushing.online([claimed, omitted, online_only]) == [1, 2, 3]
    assert pushing.offline([online_only]).empty


def test_to_offline_writes_only_the_offline_store(pushing: Pushing) -> None:
    customer = 960_000_021
    event = _now() - timedelta(minutes=1)
    assert pushing.push(_rows([customer], [4], event), "offline").status_code == 200
    assert pushing.online([customer]) == [None]
    assert pushing.offline([customer])["n_txn_1h"].tolist() == [4]
    training = pushing.stack.training_set(_labels(customer, [_now()]))
    assert training["n_txn_1h"].tolist() == [4]


def test_a_failed_offline_write_is_a_503_and_nothing_changes_online(pushing: Pushing) -> None:
    served, new = 960_000_031, 960_000_032
    event = _now() - timedelta(minutes=2)
    assert pushing.push(_rows([served], [1], event), "online_and_offline").status_code == 200

    later = _rows([served, new], [2, 2], event + timedelta(minutes=1))
    with _offline_table_away(pushing):
        _assert_unavailable(pushing.push(later, "online_and_offline"))

    assert pushing.online([served, new]) == [1, None]
    assert pushing.offline([served, new])["n_txn_1h"].tolist() == [1]


def test_concurrent_pushes_all_reach_the_offline_store(pushing: Pushing) -> None:
    customers = list(range(960_000_041, 960_000_049))
    event = _now() - timedelta(minutes=1)
    statuses: list[int] = []

    def push_one(customer: int) -> None:
        statuses.append(pushing.push(_rows([customer], [5], event), "offline").status_code)

    threads = [threading.Thread(target=push_one, args=(c,)) for c in customers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert statuses == [200] * len(customers)
    assert sorted(pushing.offline(customers)["customer_id"]) == customers


def test_a_push_failing_midway_writes_no_row(pushing_dev: Pushing) -> None:
    """Row three of three breaks a constraint: the two before it are not kept either."""
    customers = [960_000_051, 960_000_052, 960_000_053]
    with pushing_dev.postgres() as conn:
        conn.execute(f"ALTER TABLE {TABLE} ADD CONSTRAINT few CHECK (n_txn_1h < 1000) NOT VALID")
        conn.commit()
        try:
            rows = _rows(customers, [1, 2, 5000], _now() - timedelta(minutes=1))
            _assert_unavailable(pushing_dev.push(rows, "online_and_offline"))
        finally:
            conn.execute(f"ALTER TABLE {TABLE} DROP CONSTRAINT few")
            conn.commit()
    assert pushing_dev.offline(customers).empty
    assert pushing_dev.online(customers) == [None, None, None]
    # PostgreSQL's error quotes the refused row: the server's log must not.
    logged = pushing_dev.server_log.read_text()
    assert "CheckViolation" in logged
    assert str(customers[2]) not in logged


def test_a_locked_table_fails_the_push_instead_of_holding_it(pushing_dev: Pushing) -> None:
    """DDL holds the table: the write gives up after the store's write timeout (5 s)."""
    customer = 960_000_061
    with pushing_dev.postgres() as conn:
        conn.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
        rows = _rows([customer], [1], _now() - timedelta(minutes=1))
        # Without the timeout the request would wait for the lock, past this timeout.
        _assert_unavailable(pushing_dev.push(rows, "online_and_offline", timeout_s=20))
        conn.rollback()
    assert pushing_dev.online([customer]) == [None]
    assert pushing_dev.offline([customer]).empty


NOW = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
GOOD = {"customer_id": [960_000_071], "event_timestamp": [NOW], "n_txn_1h": [1],
        "sum_amount_1h": [1.5]}  # fmt: skip
MISTAKES = [
    ("malformed JSON", b'{"push_source_name": ', 400, "not valid JSON"),
    ("not an object", b"[1]", 422, "JSON object"),
    ("no source", {"df": GOOD, "to": "offline"}, 422, "push_source_name"),
    ("unknown source", {"push_source_name": "nope_push", "df": GOOD}, 404, "nope_push"),
    ("bad to", {"push_source_name": SOURCE, "df": GOOD, "to": "everywhere"}, 422, "'to'"),
    ("df not an object", {"push_source_name": SOURCE, "df": [1]}, 400, "'df'"),
    ("missing columns", {"push_source_name": SOURCE, "df": {"customer_id": [1]}}, 400,
     "missing columns: n_txn_1h, sum_amount_1h, event_timestamp"),
    ("unequal lengths", {"push_source_name": SOURCE, "df": {**GOOD, "n_txn_1h": [1, 2]}}, 400,
     "differ in length"),
    ("empty columns", {"push_source_name": SOURCE, "df": {k: [] for k in GOOD}}, 400, "empty"),
    ("string for Int64", {"push_source_name": SOURCE, "df": {**GOOD, "n_txn_1h": ["1"]}}, 400,
     "df.n_txn_1h[0]"),
    ("null join key", {"push_source_name": SOURCE, "df": {**GOOD, "customer_id": [None]}}, 400,
     "df.customer_id[0] is null"),
    ("event time a number", {"push_source_name": SOURCE,
                             "df": {**GOOD, "event_timestamp": [5]}}, 400, "df.event_timestamp[0]"),
    ("event time not ISO 8601", {"push_source_name": SOURCE,
                                 "df": {**GOOD, "event_timestamp": ["now"]}}, 400, "ISO 8601"),
    ("column not in the table", {"push_source_name": SOURCE, "to": "online_and_offline",
                                 "df": {**GOOD, "note": ["x"]}}, 400, "note"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "body", "status", "fragment"), MISTAKES, ids=[m[0] for m in MISTAKES]
)
def test_push_mistakes_get_4xx_with_a_reason_and_write_nothing(
    pushing_dev: Pushing, case: str, body: object, status: int, fragment: str
) -> None:
    if isinstance(body, dict):
        body = {"to": "online_and_offline", **body}
    response = requests.post(
        f"{pushing_dev.server.url}/push",
        data=body if isinstance(body, bytes) else None,
        json=None if isinstance(body, bytes) else body,
        headers={"Authorization": f"Bearer {WRITE_TOKEN}"},
        timeout=10,
    )
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert fragment in payload["detail"], payload
    for leak in LEAKS:
        assert leak not in response.text
    assert pushing_dev.online(GOOD["customer_id"]) == [None]
    assert pushing_dev.offline(GOOD["customer_id"]).empty
