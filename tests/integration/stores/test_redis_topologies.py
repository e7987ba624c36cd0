"""The fast path on a Redis Cluster and on Sentinel: Feast's answers, and a failover.

Each topology runs once for the module (redis_topologies.py), with a dev stack deployed
on it: materialized through the platform's store (its compare-and-set script on every
node), served by the platform's server and by stock `feast serve` on Feast's own Redis
store (stock_feast.py). A planned failover must lose no push made after it; then the
primary is killed under a read loop: errors are 503s between the kill and the recovery,
which follows the promotion, and every request afterwards is a 200 with the same values.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import AS_OF, SEED, deploy
from prometheus_client.parser import text_string_to_metric_families
from redis_topologies import (
    CLUSTER,
    MASTER,
    Topology,
    available,
    cluster,
    sentinel,
    topology_stack,
)
from stacks import WRITABLE, WRITE_TOKEN, Stack
from stock_feast import PAST_TTL, Views, by_name, compare, launch_stock, request_bodies

from feature_platform import cli
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.errors import EXIT_CONFIG_ERROR
from feature_platform.stores.redis_sentinel import RECHECK_S
from feature_platform.training import FEATURE_SERVICE

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

# Small: what is tested is the topology, not the data.
SIZES = generator.Sizes(customers=60, merchants=10, days=3, transactions=600)
ENTITIES: dict[str, list[Any]] = {
    "customer_id": list(range(1, 41)),
    "merchant_id": [1 + i % 10 for i in range(40)],
    "amount": [10.5] * 40,
}
READ = {"feature_service": FEATURE_SERVICE, "entities": ENTITIES}


@dataclass
class Deployed:
    topology: Topology
    stack: Stack
    server: FeatureServer
    stock: FeatureServer


@pytest.fixture(scope="module", params=["cluster", "sentinel"])
def deployed(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deployed]:
    start: Callable[[Path], Any] = {"cluster": cluster, "sentinel": sentinel}[request.param]
    with start(tmp_path_factory.mktemp(f"redis_{request.param}")) as topology:
        stack = topology_stack(topology, f"topo_{request.param}")
        try:
            # every row online, so that values past their view's ttl are among them
            deploy(stack, generator.generate(SIZES, seed=SEED, as_of=AS_OF), history=True)
            # both servers boot at once
            stock = launch_stock(stack, tmp_path_factory.mktemp(f"stock_{request.param}"))
            server = stack.server(settings={**WRITABLE, "FEATURE_SERVER_DRAIN_SECONDS": "0"})
            stock.wait_ready()
            yield Deployed(topology, stack, server, stock)
        finally:
            stack.close()


def _post(server: FeatureServer, body: dict[str, Any], timeout_s: float = 10) -> requests.Response:
    return requests.post(f"{server.url}/get-online-features", json=body, timeout=timeout_s)


def test_answers_equal_stock_feast(deployed: Deployed) -> None:
    # The stock-equality request set: 1 to 100 entities, unseen ones, repeated rows.
    views = Views.of(deployed.stack.store())
    past_ttl = 0
    for body in request_bodies(SIZES):
        compared = compare(deployed.server, deployed.stock, body, views)
        assert compared.problems == []
        past_ttl += sum(states[PAST_TTL] for states in compared.states.values())
    assert past_ttl > 0, "the ttl rule must be part of the comparison"
    present = by_name(_post(deployed.server, READ).json())["avg_purchase_30d"][1]
    assert present.count("PRESENT") > 20, "the topology must hold the materialized rows"


def test_fast_path_equals_feasts_read_in_process(deployed: Deployed) -> None:
    """Feast's read path in this process (the platform's store class, its sync client on
    the topology) gives the values the fast path serves."""
    store = deployed.stack.store()
    rows = [dict(zip(ENTITIES, row, strict=True)) for row in zip(*ENTITIES.values(), strict=True)]
    feast = store.get_online_features(
        features=store.get_feature_service(FEATURE_SERVICE), entity_rows=rows
    ).to_dict()
    served = {
        name: column[0] for name, column in by_name(_post(deployed.server, READ).json()).items()
    }
    assert served == {name: feast[name] for name in served}


def _push(server: FeatureServer, customers: list[int], counts: list[int]) -> requests.Response:
    now = datetime.now(UTC).isoformat()
    body = {
        "push_source_name": "customer_txn_1h_push",
        "to": "online",
        "df": {
            "customer_id": customers,
            "event_timestamp": [now] * len(customers),
            "n_txn_1h": counts,
            "sum_amount_1h": [float(c) for c in counts],
        },
    }
    headers = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    return requests.post(f"{server.url}/push", json=body, headers=headers, timeout=10)


def _served_counts(server: FeatureServer, customers: list[int]) -> list[Any]:
    read = {"features": ["customer_txn_1h:n_txn_1h"], "entities": {"customer_id": customers}}
    return list(by_name(_post(server, read).json())["n_txn_1h"][0])


CUSTOMERS = [101, 102, 103, 104, 105, 106]  # spread over the cluster's slots


def test_ready_and_push_reach_the_topology(deployed: Deployed) -> None:
    assert requests.get(f"{deployed.server.url}/ready", timeout=5).status_code == 200
    pushed = _push(deployed.server, CUSTOMERS, [71, 72, 73, 74, 75, 76])
    assert pushed.status_code == 200, pushed.text
    for server in (deployed.server, deployed.stock):
        assert _served_counts(server, CUSTOMERS) == [71, 72, 73, 74, 75, 76]


def _policies(server: FeatureServer) -> dict[str, str]:
    """node -> maxmemory-policy, as the server's /metrics reports them."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return {
        sample.labels["node"]: sample.labels["policy"]
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "feature_platform_redis_maxmemory_policy_info"
    }


def test_every_primary_is_checked_for_eviction_and_reported(
    deployed: Deployed, capsys: pytest.CaptureFixture[str]
) -> None:
    """Cluster: each primary holds its own slots and fills up on its own; Sentinel: the
    primary, named as the sentinels know it, across failovers."""
    topology = deployed.topology
    primaries = topology.primary_ports()
    cluster_nodes = topology.kind == CLUSTER
    names = {port: f"127.0.0.1:{port}" if cluster_nodes else MASTER for port in primaries}
    assert _policies(deployed.server) == {name: "noeviction" for name in names.values()}

    evicting = primaries[-1]
    node = topology.node(evicting)
    node.config_set("maxmemory-policy", "allkeys-lru")
    capsys.readouterr()
    try:
        with deployed.stack.active():
            assert cli.main(["materialize", deployed.stack.env]) == EXIT_CONFIG_ERROR
        refused = capsys.readouterr().err
        assert f"({names[evicting]} has maxmemory-policy allkeys-lru)" in refused
        assert _policies(deployed.server)[names[evicting]] == "allkeys-lru"
    finally:
        node.config_set("maxmemory-policy", "noeviction")


def test_writes_and_reads_follow_a_switchover(deployed: Deployed) -> None:
    """A planned failover (the old primary stays up): a push a second later reaches the
    new primary and is served, and it survives the old primary's conversion to a replica
    (which discards whatever was written to it meanwhile, about ten seconds under
    Sentinel)."""
    deployed.topology.fail_over(graceful=True)
    time.sleep(RECHECK_S + 0.1)  # the clients' bound on following the new primary
    pushed = _push(deployed.server, CUSTOMERS, [81, 82, 83, 84, 85, 86])
    assert pushed.status_code == 200, pushed.text
    assert _served_counts(deployed.server, CUSTOMERS) == [81, 82, 83, 84, 85, 86]
    deployed.topology.settle()  # the old primary now replicates the new one
    for server in (deployed.server, deployed.stock):
        assert _served_counts(server, CUSTOMERS) == [81, 82, 83, 84, 85, 86]
    assert requests.get(f"{deployed.server.url}/ready", timeout=5).status_code == 200


def test_failover_under_load(deployed: Deployed, tmp_path_factory: pytest.TempPathFactory) -> None:
    expected = by_name(_post(deployed.server, READ).json())
    results: list[tuple[float, float, int, bool]] = []
    stop = threading.Event()

    def read_loop() -> None:
        session = requests.Session()
        deadline = time.monotonic() + 40
        while not stop.is_set() and len(results) < 20_000 and time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{deployed.server.url}/get-online-features", json=READ, timeout=5
                )
                status = response.status_code
                equal = status == 200 and by_name(response.json()) == expected
            except requests.RequestException:
                status, equal = 0, False
            results.append((sent, time.monotonic(), status, equal))

    loop = threading.Thread(target=read_loop)
    loop.start()
    deployed.topology.settle()  # replicas in sync, sentinels acquainted
    try:
        time.sleep(1)
        killed = time.monotonic()
        deployed.topology.fail_over()
        promoted = time.monotonic()
        time.sleep(4)  # the loop keeps reading after the promotion
    finally:
        stop.set()
        loop.join()

    failures = [r for r in results if not r[3]]
    before = [r for r in results if r[1] < killed]
    assert before and all(r[3] for r in before), "every read before the failover is served"
    assert all(r[2] == 503 for r in failures), f"failures are 503s: {failures[:5]}"
    # One window of errors, closed after the promotion: from the first read sent after it
    # and served, every read is served. How long the window lasts is reported, not asserted.
    recovered = min((r[0] for r in results if r[0] > promoted and r[3]), default=None)
    assert recovered is not None, "no read sent after the promotion was served"
    after = [r for r in results if r[0] >= recovered]
    assert len(after) > 20 and all(r[3] for r in after), "errors after the recovery"
    assert requests.get(f"{deployed.server.url}/ready", timeout=5).status_code == 200

    figures = {
        "topology": deployed.topology.kind,
        "requests": len(results),
        "errors": len(failures),
        "promotion_s": round(promoted - killed, 2),
        "error_window_s": (
            round(max(r[1] for r in failures) - min(r[0] for r in failures), 2) if failures else 0
        ),
        "recovered_after_promotion_s": round(recovered - promoted, 2),
        "served_after_recovery": len(after),
    }
    print(json.dumps(figures))
    path = tmp_path_factory.getbasetemp() / f"failover_{deployed.topology.kind}.json"
    path.write_text(json.dumps(figures))
