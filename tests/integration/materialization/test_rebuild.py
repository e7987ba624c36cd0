"""A lost online store told apart from a quiet source, and rebuilt from the offline store.

One dev stack of its own, loaded by `feature-platform materialize` (so its views have
watermarks); each test flushes its Redis db the way a restart without persistence or a
failover to an empty replica would, and leaves the store rebuilt.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest
import requests
from conftest import AS_OF, MAT_END, SEED
from faults import PrivateRedis, eventually
from stacks import Stack, patched_environ

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.errors import EXIT_FAILED, EXIT_OK
from feature_platform.materialization import load as materialize
from feature_platform.materialization import rebuild
from feature_platform.training import FEATURE_SERVICE

SIZES = generator.Sizes(customers=60, merchants=8, days=4, transactions=300)


@pytest.fixture(scope="module")
def loaded(stack_factory: Callable[..., Stack]) -> Stack:
    stack = stack_factory("dev", "rebuild")
    stack.write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
    stack.feast("apply")
    stack.materialize(MAT_END)
    return stack


def _online(stack: Stack) -> dict[str, list[Any]]:
    store = stack.store()
    rows = [
        {"customer_id": c, "merchant_id": 1 + c % SIZES.merchants, "amount": 10.0}
        for c in range(1, SIZES.customers + 1)
    ]
    return store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=rows
    ).to_dict()


def _present(answer: dict[str, list[Any]]) -> int:
    return sum(value is not None for value in answer["n_purchases_30d"])


def _materialize(stack: Stack, **settings: str) -> tuple[int, list[str]]:
    lines: list[str] = []
    with stack.active(), patched_environ(settings):
        code = materialize.job(stack.env, MAT_END, lines.append)
    return code, lines


def test_a_quiet_source_is_not_a_lost_store(loaded: Stack) -> None:
    code, lines = _materialize(loaded)
    assert code == EXIT_OK, lines
    coverage = [line for line in lines if "coverage" in line]
    assert len(coverage) == 3, lines
    assert not any("lost" in line for line in lines), lines


def test_a_flushed_store_is_detected_and_rebuilt_by_materialize(loaded: Stack) -> None:
    before = _online(loaded)
    assert _present(before) > SIZES.customers // 2
    loaded.redis().flushdb()
    assert _present(_online(loaded)) == 0
    code, lines = _materialize(loaded)
    assert code == EXIT_OK, lines
    assert any(line.startswith("online store lost for customer_stats") for line in lines), lines
    assert _online(loaded) == before


def test_with_rebuild_off_materialize_fails_naming_the_command(loaded: Stack) -> None:
    before = _online(loaded)
    loaded.redis().flushdb()
    code, lines = _materialize(loaded, **{rebuild.REBUILD_VAR: "off"})
    assert code == EXIT_FAILED
    assert f"rebuild-online {loaded.env}" in lines[-1], lines[-1]
    assert _present(_online(loaded)) == 0
    with loaded.active():
        assert rebuild.job(loaded.env, None, lines.append) == EXIT_OK
    assert _online(loaded) == before


def test_rebuild_keeps_a_value_newer_than_the_offline_store(loaded: Stack) -> None:
    """A push (or a load) that wrote a newer value meanwhile is never overwritten."""
    store = loaded.store()
    pushed = pd.DataFrame({
        "customer_id": [1],
        "n_txn_1h": [4242],
        "sum_amount_1h": [1.5],
        "event_timestamp": [pd.Timestamp(MAT_END)],
        "created_timestamp": [pd.Timestamp.now(tz="UTC")],
    })  # fmt: skip
    with loaded.active():
        store.write_to_online_store("customer_txn_1h", pushed)
        assert rebuild.job(loaded.env, ["customer_txn_1h"], lambda _line: None) == EXIT_OK
    answer = store.get_online_features(
        features=["customer_txn_1h:n_txn_1h"], entity_rows=[{"customer_id": 1}]
    ).to_dict()
    assert answer["n_txn_1h"] == [4242]


def test_redis_restarted_empty_under_load_is_rebuilt_and_consistent(
    stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A Redis without persistence restarts empty while clients read: every answer in the
    window is a 200 or a 503 (none a 500, none hangs), the next run finds the loss and
    rebuilds, and the skew check then finds the server consistent with training."""
    redis = PrivateRedis(tmp_path_factory.mktemp("chaos_redis"))
    redis.start()
    stack = stack_factory("dev", "chaos", {"REDIS_PORT": str(redis.port)})
    try:
        stack.write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
        stack.feast("apply")
        stack.materialize(MAT_END)
        server = stack.server(settings={"FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "0.5"})
        statuses: Counter[int] = Counter()
        failures: list[str] = []
        stop = threading.Event()

        def read() -> None:
            session = requests.Session()
            body = {
                "feature_service": FEATURE_SERVICE,
                "entities": {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [1.0, 2.0]},
            }
            deadline = time.monotonic() + 120
            for _ in range(50_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    reply = session.post(f"{server.url}/get-online-features", json=body, timeout=5)
                    statuses[reply.status_code] += 1
                except requests.RequestException as exc:
                    failures.append(repr(exc))

        reader = threading.Thread(target=read)
        reader.start()
        try:
            eventually(lambda: statuses[200] > 20, "reads before the restart")
            redis.stop()
            redis.start()  # no persistence: empty
            code, lines = _materialize(stack)
            served_before_rebuild = statuses[200]
            eventually(lambda: statuses[200] > served_before_rebuild + 20, "reads after")
        finally:
            stop.set()
            reader.join(timeout=30)
        print(f"answers while Redis restarted empty and was rebuilt: {dict(statuses)}")
        assert code == EXIT_OK, lines
        assert any(line.startswith("online store lost for") for line in lines), lines
        assert not failures, failures[:3]
        assert set(statuses) <= {200, 503}, statuses
        with stack.active():
            checked = cli.main(["skew-check", stack.env, "--server-url", server.url,
                                "--rows", "100", "--seed", "3"])  # fmt: skip
        assert checked == EXIT_OK
    finally:
        stack.close()  # while its Redis still runs
        redis.stop()
