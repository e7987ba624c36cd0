"""The chart's commands and environment, run as local processes against the test services.

The chart is rendered with external Redis and PostgreSQL values pointing at this run's
isolated databases and Redis db. Each rendered container's command, args and environment
(resolved from the rendered ConfigMaps and the Secrets an operator would create; mounted
ConfigMaps written to a temporary directory) then runs from .venv/bin, the way the image
runs it. No cluster is needed to prove that the commands and settings are right.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
import requests
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from psycopg import sql
from rendering import (
    SCENARIOS,
    LocalCommand,
    ci_load_steps,
    local_command,
    one,
    platform_job,
    pod_template,
    push_counters_job,
    render,
    secret_object,
    stack_values,
)
from stacks import Stack, make_stack

from feature_platform.devtools.launcher import free_port
from feature_platform.offline import tables as offline_tables
from feature_platform.training import ENTITY_COLUMNS, training_set

pytestmark = pytest.mark.integration

SIZES = ["--customers", "60", "--merchants", "8", "--days", "6", "--transactions", "300"]


@dataclass
class Rendered:
    stack: Stack
    settings: dict[str, str]
    objects: list[dict[str, Any]]
    root: Path
    port: int

    def command(self, kind: str, container: str, suffix: str = "") -> LocalCommand:
        obj = one(self.objects, kind, suffix)
        pod = pod_template(obj)
        return self.command_of(pod, container)

    def command_of(self, pod: dict[str, Any], container: str) -> LocalCommand:
        spec = pod["spec"]
        (c,) = [
            c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == container
        ]
        return local_command(pod, c, self.objects, self.root / container)


def run(command: LocalCommand) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command.argv, env=command.env, cwd=command.cwd, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    stack = make_stack("dev", "chart", tmp_path_factory.mktemp("chart_stack"))
    try:
        s = stack.settings()
        port = free_port()
        overrides = {
            **stack_values(s),
            "server": {"port": port, "workers": 1},
            # The servers for clients without credentials, on ports of their own.
            "registryServer": {
                "enabled": True,
                "replicas": 1,
                "port": free_port(),
                "restPort": free_port(),
            },
            "offlineServer": {"enabled": True, "replicas": 1, "port": free_port()},
            "ui": {"enabled": True, "replicas": 1, "port": free_port()},
        }
        values_file = SCENARIOS["ci/external-values"]
        objects = render(values_file, overrides)
        # The Secrets an operator creates before installing (the local services' passwords).
        objects += [
            secret_object("ci-postgres", {"password": s["POSTGRES_PASSWORD"]}),
            secret_object("ci-redis", {"password": s["REDIS_PASSWORD"]}),
        ]
        yield Rendered(stack, s, objects, tmp_path_factory.mktemp("pods"), port)
    finally:
        stack.close()


def _databases(settings: dict[str, str]) -> set[str]:
    conninfo = offline_tables.postgres_conninfo(settings, "postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return {r[0] for r in rows}


@pytest.fixture(scope="module")
def initialized(rendered: Rendered) -> subprocess.CompletedProcess[str]:
    """The server pod's init container, against databases that do not exist yet."""
    s = rendered.settings
    conninfo = offline_tables.postgres_conninfo(s, "postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in (s["REGISTRY_DB"], s["OFFLINE_DB"]):
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    assert not {s["REGISTRY_DB"], s["OFFLINE_DB"]} & _databases(s)
    return run(rendered.command("Deployment", "init-db", "-server"))


@pytest.fixture(scope="module")
def applied(rendered: Rendered, initialized: subprocess.CompletedProcess[str]) -> None:
    """Sample data and `feast apply`, as CI (and the kind tier) run them: a Job built from
    the server pod with other args."""
    deployment = one(rendered.objects, "Deployment", "-server")
    for name, args in ci_load_steps("dev", SIZES):
        job = platform_job(deployment, name, args)
        done = run(rendered.command_of(job["spec"]["template"], name))
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def materialized(rendered: Rendered, applied: None) -> subprocess.CompletedProcess[str]:
    return run(rendered.command("CronJob", "materialize", "-materialize"))


def test_init_container_creates_the_databases(
    rendered: Rendered, initialized: subprocess.CompletedProcess[str]
) -> None:
    assert initialized.returncode == 0, initialized.stderr[-3000:]
    s = rendered.settings
    assert {s["REGISTRY_DB"], s["OFFLINE_DB"]} <= _databases(s)
    # Idempotent: a second pod's init container finds them and succeeds.
    assert run(rendered.command("Deployment", "init-db", "-server")).returncode == 0


def test_cronjob_command_materializes_into_redis(
    rendered: Rendered, materialized: subprocess.CompletedProcess[str]
) -> None:
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    client = rendered.stack.redis()
    # The test's own claim key plus the materialized entity hashes.
    assert client.dbsize() > 50


@pytest.fixture(scope="module")
def helm_test_entity(rendered: Rendered) -> dict[str, int]:
    """The customer and merchant the `helm test` pod asks for (helmTest values)."""
    env = rendered.command("Pod", "fetch-vector", "-test").env
    return {"customer_id": int(env["CUSTOMER_ID"]), "merchant_id": int(env["MERCHANT_ID"])}


@pytest.fixture(scope="module")
def live_counters(
    rendered: Rendered,
    materialized: subprocess.CompletedProcess[str],
    helm_test_entity: dict[str, int],
) -> None:
    """Fresh hourly counters for the customers read here, pushed by the Job the kind tier
    runs before `helm test`."""
    assert materialized.returncode == 0, materialized.stderr[-3000:]
    customers = sorted({1, 2, helm_test_entity["customer_id"]})
    deployment = one(rendered.objects, "Deployment", "-server")
    job = push_counters_job(deployment, "push-counters", "dev", customers)
    done = run(rendered.command_of(job["spec"]["template"], "push-counters"))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def server_url(rendered: Rendered, live_counters: None) -> Iterator[str]:
    """The server Deployment's command, ready by its probes; SIGTERM must end it cleanly."""
    command = rendered.command("Deployment", "server", "-server")
    url = f"http://127.0.0.1:{rendered.port}"
    with _running(command.argv, command, rendered.root / "server.log") as server:
        # Probe like the kubelet until both paths answer 200.
        server.wait_until(lambda: _statuses(url) == {"/health": 200, "/ready": 200})
        yield url


def _service_features(rendered: Rendered) -> set[str]:
    service = rendered.stack.store().get_feature_service("fraud_detection_v1")
    return {f.name for p in service.feature_view_projections for f in p.features}


def _helm_test(rendered: Rendered, url: str) -> subprocess.CompletedProcess[str]:
    """The `helm test` pod's own script, with the Service's address made local."""
    helm_test = rendered.command("Pod", "fetch-vector", "-test")
    helm_test.env["SERVER_URL"] = url
    return run(helm_test)


def test_server_command_serves_ready_and_live(rendered: Rendered, server_url: str) -> None:
    entities = {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.0]}
    reply = requests.post(
        f"{server_url}/get-online-features",
        json={"feature_service": "fraud_detection_v1", "entities": entities},
        timeout=10,
    )
    assert reply.status_code == 200, reply.text[:500]
    body = reply.json()
    statuses = {
        name: result["statuses"]
        for name, result in zip(body["metadata"]["feature_names"], body["results"], strict=True)
        if name not in entities
    }
    assert set(statuses) == _service_features(rendered)
    missing = {name: s for name, s in statuses.items() if s != ["PRESENT", "PRESENT"]}
    assert not missing, f"not PRESENT for both rows: {missing}"
    assert requests.get(f"{server_url}/metrics", timeout=5).status_code == 200
    done = _helm_test(rendered, server_url)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"all {len(statuses)} features PRESENT" in done.stdout
    # The skew-check CronJob's command, pointed at this server: what it serves
    # equals the training rows of the materialized data.
    skew_check = rendered.command("CronJob", "skew-check", "-skew-check")
    skew_check.env["SKEW_CHECK_SERVER_URL"] = server_url
    done = run(skew_check)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Skew check of dev: consistent" in done.stdout


def test_helm_test_fails_naming_the_features_not_present(
    rendered: Rendered, server_url: str, helm_test_entity: dict[str, int]
) -> None:
    """One view's row of the helm test's merchant gone from Redis: the pod's script fails
    and names that view's features, and only those."""
    merchant = EntityKeyProto(
        join_keys=["merchant_id"],
        entity_values=[ValueProto(int64_val=helm_test_entity["merchant_id"])],
    )
    key = serialize_entity_key(merchant, 3) + b"fraud_detection"
    # Without its write timestamp the view's row reads as not found.
    field = "_ts:merchant_stats"
    client = rendered.stack.redis()
    written = client.hget(key, field)
    assert written, "the merchant's row was not materialized"
    client.hdel(key, field)
    try:
        done = _helm_test(rendered, server_url)
    finally:
        client.hset(key, field, written)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    (verdict,) = [line for line in done.stdout.splitlines() if "not PRESENT" in line]
    named = set(re.findall(r"(\w+) \(NOT_FOUND\)", verdict))
    view = rendered.stack.store().get_feature_view("merchant_stats")
    assert named == {f.name for f in view.features}, verdict
    # and with the row back, it passes
    assert _helm_test(rendered, server_url).returncode == 0


def _statuses(url: str) -> dict[str, int]:
    try:
        return {p: requests.get(url + p, timeout=2).status_code for p in ("/health", "/ready")}
    except (requests.ConnectionError, requests.Timeout):
        return {}  # not listening yet, or a worker still loading


@dataclass
class _Process:
    process: subprocess.Popen[bytes]
    log: Path

    def wait_until(self, ready: Callable[[], bool], timeout_s: float = 120) -> None:
        """Poll `ready` until it holds; fails with the log's tail if the process exits first
        or the time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"exited: {self.log.read_text()[-3000:]}"
            if ready():
                return
            time.sleep(0.5)
        raise AssertionError(f"not ready in {timeout_s}s: {self.log.read_text()[-3000:]}")


@contextmanager
def _running(argv: list[str], command: LocalCommand, log: Path) -> Iterator[_Process]:
    """A rendered container's command as a local process, its output in `log`; on leaving,
    SIGTERM (as the kubelet sends it) must end it cleanly."""
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=command.env, cwd=command.cwd, stdout=out, stderr=out)
        try:
            yield _Process(process, log)
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=60)
    assert code == 0, log.read_text()[-3000:]


@pytest.mark.parametrize("part", ["registry", "offline"])
def test_client_server_commands_answer_their_probes(
    rendered: Rendered, applied: None, part: str
) -> None:
    """The registry and offline servers' containers as processes: their probes' ports
    answer (the gRPC health service; a Flight call), and SIGTERM ends them cleanly."""
    from feature_platform.devtools.launcher import flight_answers, grpc_health

    deployment = one(rendered.objects, "Deployment", f"-{part}")
    (container,) = pod_template(deployment)["spec"]["containers"]
    probe = container["readinessProbe"]
    port = (probe.get("grpc") or probe["tcpSocket"])["port"]
    command = rendered.command("Deployment", part, f"-{part}")
    address = f"127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return grpc_health(address) == "SERVING" if "grpc" in probe else flight_answers(address)
        except grpc.RpcError:
            return False

    # Loopback here; the pod listens on every address.
    argv = [*command.argv, "--host", "127.0.0.1"]
    with _running(argv, command, rendered.root / f"{part}.log") as server:
        server.wait_until(answers)
        if part == "registry":
            rest = container["args"][container["args"].index("--rest-port") + 1]
            listed = requests.get(f"http://127.0.0.1:{rest}/api/v1/projects", timeout=10).json()
            assert [p["spec"]["name"] for p in listed["projects"]] == ["fraud_detection"]
        else:
            # A thin client's training set, staged under the pod's TMPDIR, rows read from
            # the pod's own mirror, copied whole before the server listened.
            store = rendered.stack.through_offline_server(int(port), rendered.root / "thin")
            labels = offline_tables.read(rendered.settings, "transactions")[ENTITY_COLUMNS]
            train = training_set(store, labels.head(20))
            assert len(train) == 20 and train["avg_purchase_30d"].notna().any()
            log = server.log.read_text()
            assert "training set: platform engine, 20 labels" in log
            listening = log.index("offline server (read-only)")
            assert 0 <= log.find("copied whole (no mirror yet)") < listening, log
            mirror = Path(command.env["OFFLINE_MIRROR_DIR"])
            assert list(mirror.glob("*/*/manifest.json")), "the pod's own mirror"


def test_ui_command_answers_its_probe(rendered: Rendered, applied: None) -> None:
    """The UI's container as a process: its probe's GET answers, the API lists this
    project, and SIGTERM ends it cleanly."""
    (container,) = pod_template(one(rendered.objects, "Deployment", "-ui"))["spec"]["containers"]
    probe = container["readinessProbe"]["httpGet"]
    url = f"http://127.0.0.1:{probe['port']}"
    command = rendered.command("Deployment", "ui", "-ui")

    def answers() -> bool:
        try:
            return requests.get(url + probe.get("path", "/"), timeout=2).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    argv = [*command.argv, "--host", "127.0.0.1"]
    with _running(argv, command, rendered.root / "ui.log") as server:
        server.wait_until(answers)
        listed = requests.get(f"{url}/api/v1/projects", timeout=10).json()
        assert [p["spec"]["name"] for p in listed["projects"]] == ["fraud_detection"]
