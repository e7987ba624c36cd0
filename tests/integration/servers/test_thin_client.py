"""Every consumer served without the database passwords.

One dev stack of its own (the writes below must not reach the shared stacks), with the
feature server, the registry server and the offline server each started once. Feast's
SDK then runs in a subprocess that has only the file `feature-platform client-config`
prints and no database or Redis variable in its environment: it lists, reads online,
builds a training set and writes, and every answer equals the direct one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import psycopg
import pytest
import requests
import yaml
from conftest import AS_OF, MAT_END, SEED, deploy
from feast.protos.feast.registry import RegistryServer_pb2, RegistryServer_pb2_grpc
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform import cli
from feature_platform.config import client as client_config
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer, PlatformServer, free_port
from feature_platform.offline import tables as offline_tables
from feature_platform.servers import registry
from feature_platform.training import ENTITY_COLUMNS, FEATURE_SERVICE, training_set

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
CALLS = Path(__file__).with_name("thin_client_calls.py")
TOKEN_VAR = "FEATURE_PLATFORM_WRITE_TOKEN"
PROJECT = "fraud_detection"
LATE_VALUE = 987654.25
TXN_COUNT = "customer_txn_1h:n_txn_1h"
# What a client process may inherit: nothing that names a store or holds a secret.
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class Thin:
    stack: Stack
    server: FeatureServer
    registry: PlatformServer
    offline: PlatformServer
    labels: pd.DataFrame
    late_customer: int

    def config(self, **changes: Any) -> client_config.ClientConfig:
        addresses = {
            "registry": self.registry.address,
            "offline": self.offline.address,
            "online": self.server.url,
        }
        addresses.update(changes)
        return client_config.for_environment("dev", **addresses)

    def clients(self, work: Path, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Feast's SDK in one process with only the client files: each step names its
        file (`config`, a ClientConfig), its operation and its input."""
        work.mkdir(parents=True, exist_ok=True)
        for number, step in enumerate(steps):
            config_dir = work / f"client_{number}"
            config_dir.mkdir()
            (config_dir / "feature_store.yaml").write_text(step["config"].render())
            step["config"] = config_dir.name
        (work / "input.json").write_text(json.dumps(steps, default=str))
        env = {k: os.environ[k] for k in KEPT_VARIABLES if k in os.environ}
        env["HOME"] = str(work)
        env[TOKEN_VAR] = WRITE_TOKEN  # only a file naming it sends it
        done = subprocess.run(
            [sys.executable, str(CALLS), str(work)],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=180,  # a hang fails here instead of holding the run
        )
        assert done.returncode == 0, done.stderr[-3000:]
        outcomes: list[dict[str, Any]] = json.loads((work / "output.json").read_text())
        return outcomes


def _late_row(stack: Stack, tables: dict[str, pd.DataFrame]) -> tuple[int, pd.Timestamp]:
    """A customer_stats row written an hour after a label that its event time precedes:
    Feast's rule would join it to that label, the platform's rule must not."""
    stats = tables["customer_stats"]
    customer = int(stats["customer_id"].iloc[0])
    newest = stats.loc[stats["customer_id"] == customer, "event_timestamp"].max()
    label_time = pd.Timestamp(newest) + timedelta(minutes=30)
    row = stats[stats["customer_id"] == customer].iloc[[-1]].copy()
    row["event_timestamp"] = label_time - timedelta(minutes=20)
    row["created_timestamp"] = label_time + timedelta(hours=1)
    row["avg_purchase_30d"] = LATE_VALUE
    settings = stack.settings()
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    record = {str(k): v for k, v in row.iloc[0].to_dict().items()}
    columns = ", ".join(record)
    marks = ", ".join(["%s"] * len(record))
    with psycopg.connect(conninfo) as conn:
        conn.execute(
            f"INSERT INTO customer_stats ({columns}) VALUES ({marks})",
            [v.to_pydatetime() if isinstance(v, pd.Timestamp) else v for v in record.values()],
        )
    return customer, label_time


@pytest.fixture(scope="module")
def thin(stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Thin:
    tables = generator.generate(SIZES, seed=SEED, as_of=AS_OF)
    stack = deploy(stack_factory("dev", "thin"), tables)
    logs = tmp_path_factory.mktemp("thin_logs")
    servers: list[PlatformServer] = []
    with stack.active():
        for kind in ("registry", "offline"):
            process = PlatformServer("dev", kind, log=(logs / f"{kind}.log").open("wb"))
            stack.cleanups.append(process.stop)
            servers.append(process.launch())
    # The three boot side by side.
    # No drain period: nothing calls it while the module ends.
    settings = {**WRITABLE, "FEATURE_SERVER_DRAIN_SECONDS": "0"}
    server = stack.server(settings=settings, log=(logs / "server.log").open("wb"))
    for process in servers:
        process.wait_ready()
    late_customer, label_time = _late_row(stack, tables)
    labels = tables["transactions"][ENTITY_COLUMNS].head(60)
    late_label = labels.iloc[[0]].assign(customer_id=late_customer, event_timestamp=label_time)
    registry_server, offline_server = servers
    return Thin(
        stack,
        server,
        registry_server,
        offline_server,
        pd.concat([labels, late_label]),
        late_customer,
    )


READ, WRONG_REGISTRY, WRONG_ONLINE, WRITE_WITHOUT_TOKEN, WRITE_WITH_TOKEN, TOKEN_UNSET = range(6)
UNSET_VARIABLE = "FEATURE_PLATFORM_TOKEN_NOBODY_SET"
WRITTEN, PUSHED, REFUSED = [9_001, 9_002], [9_003], [9_101, 9_102]


def _txn_rows(customers: list[int], counts: list[int]) -> dict[str, list[Any]]:
    now = pd.Timestamp(MAT_END).floor("s")
    return {
        "customer_id": customers,
        "n_txn_1h": counts,
        "sum_amount_1h": [c * 2.5 for c in counts],
        "event_timestamp": [now.isoformat()] * len(customers),
        "created_timestamp": [now.isoformat()] * len(customers),
    }


def _closed_address() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def calls(thin: Thin, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    """Everything a notebook does, in one client process; one outcome per step."""
    work = tmp_path_factory.mktemp("client")
    thin.labels.to_parquet(work / "labels.parquet")
    rows = [{"customer_id": c, "merchant_id": m, "amount": 12.5} for c, m in [(1, 1), (2, 3)]]
    one_feature = {"features": [TXN_COUNT], "entity_rows": [{"customer_id": 1}]}
    steps: list[dict[str, Any]] = [
        {"config": thin.config(), "operation": "read", "entity_rows": rows},
        {"config": thin.config(registry=_closed_address()), "operation": "list"},
        {
            "config": thin.config(online=f"http://{_closed_address()}"),
            "operation": "online",
            **one_feature,
        },
        {
            "config": thin.config(),
            "operation": "write",
            "view": "customer_txn_1h",
            "written": _txn_rows(REFUSED[:1], [7]),
            "push_source": "customer_txn_1h_push",
            "pushed": _txn_rows(REFUSED[1:], [8]),
        },
        {
            "config": thin.config(write_token_env=TOKEN_VAR),
            "operation": "write",
            "view": "customer_txn_1h",
            "written": _txn_rows(WRITTEN, [41, 42]),
            "push_source": "customer_txn_1h_push",
            "pushed": _txn_rows(PUSHED, [43]),
        },
        {"config": thin.config(write_token_env=UNSET_VARIABLE), "operation": "list"},
    ]
    return work, thin.clients(work, steps)


def _result(calls: tuple[Path, list[dict]], step: int) -> Any:
    outcome = calls[1][step]
    assert "result" in outcome, outcome
    return outcome["result"]


def test_the_client_file_holds_no_credential(thin: Thin) -> None:
    text = thin.config(write_token_env=TOKEN_VAR).render()
    parsed = yaml.safe_load(text)
    settings = thin.stack.settings()
    content = yaml.safe_dump(parsed).lower()
    for secret_bearing in ("password", "postgresql", settings["REGISTRY_DB"], "redis", "6379"):
        assert secret_bearing not in content
    assert parsed["registry"] == {"registry_type": "remote", "path": thin.registry.address}
    assert parsed["online_store"] == {"type": "remote", "path": thin.server.url}
    assert parsed["auth"] == {"type": "oidc", "token_env_var": TOKEN_VAR}
    assert yaml.safe_load(thin.config().render())["auth"] == {"type": "no_auth"}


def test_a_client_lists_what_the_registry_holds(thin: Thin, calls: tuple) -> None:
    result = _result(calls, READ)
    direct = thin.stack.store()
    assert result["feature_views"] == sorted(v.name for v in direct.list_feature_views())
    assert result["feature_services"] == [FEATURE_SERVICE]
    assert result["entities"] == sorted(e.name for e in direct.list_entities())
    assert "customer_stats" in result["feature_views"]


def test_a_client_reads_what_the_feature_server_answers(thin: Thin, calls: tuple) -> None:
    result = _result(calls, READ)
    direct = thin.server.online_features(
        {"customer_id": [1, 2], "merchant_id": [1, 3], "amount": [12.5, 12.5]},
        feature_service=FEATURE_SERVICE,
    )
    names = direct["metadata"]["feature_names"]
    served = {name: column["values"] for name, column in zip(names, direct["results"], strict=True)}
    assert set(result["online"]) == set(served)
    assert result["online"] == served
    assert any(v is not None for v in served["avg_purchase_30d"])


def test_a_training_set_through_the_offline_server_equals_the_direct_one(
    thin: Thin, calls: tuple
) -> None:
    _result(calls, READ)
    work = calls[0]
    remote = pd.read_parquet(work / "training.parquet")
    direct = training_set(thin.stack.store(), thin.labels)
    assert len(remote) == len(thin.labels)
    pd.testing.assert_frame_equal(remote, direct, check_exact=True)
    assert remote["avg_purchase_30d"].notna().sum() > len(remote) // 2


def test_the_offline_server_applies_the_platform_rule(thin: Thin, calls: tuple) -> None:
    _result(calls, READ)
    work = calls[0]
    remote = pd.read_parquet(work / "training.parquet")
    late = remote[remote["customer_id"] == thin.late_customer]
    assert len(late) >= 1
    # The row written after the label never reaches it, remotely as directly.
    assert LATE_VALUE not in set(remote["avg_purchase_30d"].dropna())
    # It is in the table, newest by event time: Feast's rule alone would have used it.
    table = offline_tables.read(thin.stack.settings(), "customer_stats")
    assert LATE_VALUE in set(table["avg_purchase_30d"])


def _served_counts(server: FeatureServer, customers: list[int]) -> list[Any]:
    reply = server.online_features(
        {"customer_id": customers}, features=["customer_txn_1h:n_txn_1h"]
    )
    return list(reply["results"][1]["values"])


def test_a_client_with_the_write_token_writes_and_pushes(thin: Thin, calls: tuple) -> None:
    assert _result(calls, WRITE_WITH_TOKEN) == {"written": True}
    assert _served_counts(thin.server, WRITTEN + PUSHED) == [41, 42, 43]


def test_a_client_without_the_token_cannot_write(thin: Thin, calls: tuple) -> None:
    error = calls[1][WRITE_WITHOUT_TOKEN]["error"]
    assert "Error_code=401" in error or "Error_code=403" in error, error
    assert _served_counts(thin.server, REFUSED) == [None, None]


def test_a_client_whose_token_variable_is_unset_is_told_which(calls: tuple) -> None:
    error = calls[1][TOKEN_UNSET]["error"]
    assert error.startswith("PermissionError") and UNSET_VARIABLE in error, error


@pytest.mark.parametrize(
    ("step", "expected"),
    [(WRONG_REGISTRY, "StatusCode.UNAVAILABLE"), (WRONG_ONLINE, "Connection refused")],
)
def test_a_wrong_address_is_a_clear_error(calls: tuple, step: int, expected: str) -> None:
    error = calls[1][step]["error"]
    assert expected in error, error


def test_registry_writes_are_refused_over_grpc(thin: Thin) -> None:
    with grpc.insecure_channel(thin.registry.address) as channel:
        stub = RegistryServer_pb2_grpc.RegistryServerStub(channel)
        views = stub.ListFeatureViews(
            RegistryServer_pb2.ListFeatureViewsRequest(project=PROJECT), timeout=10
        )
        assert "customer_stats" in {v.spec.name for v in views.feature_views}
        with pytest.raises(grpc.RpcError) as refused:
            stub.DeleteFeatureView(
                RegistryServer_pb2.DeleteFeatureViewRequest(
                    name="customer_stats", project=PROJECT, commit=True
                ),
                timeout=10,
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "read-only" in str(refused.value.details())
        # Every other method that is not a read, with any body: refused before parsing.
        writes = [m.name for m in registry.SERVICE.methods if m.name not in registry.READ_METHODS]
        assert {"ApplyEntity", "DeleteProject", "Commit", "UpdateInfra"} <= set(writes)
        for name in writes:
            call = channel.unary_unary(f"/{registry.SERVICE.full_name}/{name}")
            with pytest.raises(grpc.RpcError) as refused:
                call(b"", timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
    assert "customer_stats" in {v.name for v in thin.stack.store().list_feature_views()}


def test_registry_writes_are_refused_over_rest(thin: Thin) -> None:
    base = f"http://127.0.0.1:{thin.registry.rest_port}/api/v1"
    listed = requests.get(f"{base}/feature_views", params={"project": PROJECT}, timeout=10)
    assert listed.status_code == 200, listed.text[:500]
    assert "customer_stats" in {v["spec"]["name"] for v in listed.json()["featureViews"]}
    assert listed.headers["x-content-type-options"] == "nosniff"
    for method, path in [
        ("POST", "/entities"),
        ("DELETE", "/feature_views/customer_stats"),
        ("POST", "/registry/refresh"),
        ("PUT", "/projects/fraud_detection"),
        ("PATCH", "/feature_services/fraud_detection_v1"),
    ]:
        answer = requests.request(method, f"{base}{path}", json={}, timeout=10)
        assert answer.status_code == 403, (method, path, answer.text[:300])
        assert set(answer.json()) == {"error", "detail"}
    assert "customer_stats" in {v.name for v in thin.stack.store().list_feature_views()}


def test_client_config_command(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--registry", "reg:1", "--offline", "off:2", "--online", "http://fs:3"]
    assert cli.main(["client-config", "dev", *flags]) == 0
    parsed = yaml.safe_load(capsys.readouterr().out)
    assert parsed["offline_store"] == {"type": "remote", "host": "off", "port": 2}
    assert parsed["registry"]["path"] == "reg:1"
    assert parsed["project"] == PROJECT
    assert cli.main(["client-config", "dev", "--offline", "no-port"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "host:port" in error, error


def test_offline_writes_are_refused(thin: Thin) -> None:
    """Feast's own client writing through the offline server: refused, nothing written."""
    import pyarrow as pa
    import pyarrow.flight as fl
    from feast.infra.offline_stores.remote import RemoteOfflineStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(**thin.config().as_dict())
    view = thin.stack.store().get_feature_view("customer_txn_1h")
    rows = pd.DataFrame(_txn_rows([9_201], [5]))
    for column in ("event_timestamp", "created_timestamp"):
        rows[column] = pd.to_datetime(rows[column], utc=True)
    with pytest.raises(fl.FlightUnauthorizedError, match="read-only"):
        RemoteOfflineStore.offline_write_batch(config, view, pa.Table.from_pandas(rows), None)
    table = offline_tables.read(thin.stack.settings(), "customer_txn_1h")
    assert 9_201 not in set(table["customer_id"])
    assert len(table) > 0


@pytest.mark.parametrize("kind", ["registry", "offline"])
def test_a_taken_port_fails_the_start(thin: Thin, kind: str) -> None:
    """Not a second server silently sharing the port (gRPC's SO_REUSEPORT default); the
    commands print this OSError as one line and exit 1."""
    from feature_platform.servers import offline

    taken = thin.registry if kind == "registry" else thin.offline
    start = registry.grpc_server if kind == "registry" else offline.flight_server
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{taken.port} \(in use\?\)"):
        start(thin.stack.store(), "127.0.0.1", taken.port)


def test_writes_are_refused_before_feasts_auth_runs(tmp_path: Path) -> None:
    """Under OIDC (an identity provider that cannot be reached, no token sent) a read
    fails in Feast's auth, while a write is refused as read-only before auth runs: no
    identity or permission can let one through."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(
        project="p",
        provider="local",
        registry=str(tmp_path / "registry.db"),
        online_store={"type": "sqlite", "path": str(tmp_path / "online.db")},
        auth={
            "type": "oidc",
            "client_id": "platform",
            "auth_discovery_url": f"http://{_closed_address()}/.well-known/openid-configuration",
        },
        entity_key_serialization_version=3,
        repo_path=tmp_path,
    )
    store = FeatureStore(config=config)
    served = registry.grpc_server(store, "127.0.0.1", 0)
    rest = registry.RestRegistry(store, "127.0.0.1", free_port())
    rest.start()
    served.serving()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{served.port}") as channel:
            stub = RegistryServer_pb2_grpc.RegistryServerStub(channel)
            with pytest.raises(grpc.RpcError) as read:
                stub.ListFeatureViews(
                    RegistryServer_pb2.ListFeatureViewsRequest(project="p"), timeout=10
                )
            assert read.value.code() != grpc.StatusCode.PERMISSION_DENIED
            with pytest.raises(grpc.RpcError) as write:
                stub.DeleteFeatureView(
                    RegistryServer_pb2.DeleteFeatureViewRequest(name="x", project="p"),
                    timeout=10,
                )
            assert write.value.code() == grpc.StatusCode.PERMISSION_DENIED
        base = f"http://127.0.0.1:{rest.server.config.port}/api/v1"
        assert requests.get(f"{base}/projects", timeout=10).status_code in (401, 403, 500)
        refused = requests.delete(f"{base}/entities/x", timeout=10)
        assert refused.status_code == 403
        assert refused.json()["error"] == "read_only"
    finally:
        rest.stop(5)
        served.stop(0)


@pytest.fixture(autouse=True)
def _no_leftover(thin: Thin) -> Iterator[None]:
    yield
    for process in (thin.registry, thin.offline):
        assert process.process is not None and process.process.poll() is None, process.kind
