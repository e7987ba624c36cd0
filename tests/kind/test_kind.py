"""The chart on a kind cluster, driven over HTTP: what no rendering can show."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import requests
from cluster import NAMESPACE, RELEASE, ROOT, Cluster, PortForward, helm_values_args
from rendering import platform_job, push_counters_job

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from compare import feature_types, materialized_at, offline_rows, online_rows
from stacks import patched_environ

from feature_platform import training
from feature_platform.config import feast_commands

FULL = f"{RELEASE}-feast-platform"
FEATURE_SERVICE = training.FEATURE_SERVICE


@pytest.fixture(scope="module")
def server(kind_cluster: Cluster) -> Iterator[PortForward]:
    forward = PortForward(kind_cluster, f"{FULL}-server", 80)
    forward.wait_http("/ready")
    yield forward
    forward.close()


def _requests(n: int = 60, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {"customer_id": rng.integers(1, 201, n), "merchant_id": rng.integers(1, 21, n)}
    ).drop_duplicates(ignore_index=True)
    df["amount"] = np.round(rng.lognormal(3.6, 0.8, len(df)), 2)
    return df


def test_vectors_match_offline_training_rows(kind_cluster: Cluster, server: PortForward) -> None:
    """The served vector equals the training row of the same keys, computed from the
    cluster's own offline store and registry (PostgreSQL through a port-forward)."""
    settings = kind_cluster.get("configmap", f"{FULL}-settings")["data"]
    secret = kind_cluster.get("secret", f"{FULL}-postgres")["data"]
    postgres = PortForward(kind_cluster, f"{FULL}-postgres", 5432)
    postgres.wait_tcp()
    try:
        env = {
            **{k: v for k, v in settings.items() if k != "FEATURE_STORE_YAML"},
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(postgres.port),
            "POSTGRES_PASSWORD": base64.b64decode(secret["postgres-password"]).decode(),
            "REDIS_PASSWORD": "",
        }
        with patched_environ(env):
            store = feast_commands.open_store("dev")
            requests_df = _requests()
            labels = requests_df.assign(event_timestamp=materialized_at(store))
            trained_df = training.training_set(store, labels)
        types = feature_types(store)
    finally:
        postgres.close()
    entities = {c: requests_df[c].tolist() for c in ("customer_id", "merchant_id", "amount")}
    reply = requests.post(
        f"{server.url}/get-online-features",
        json={"feature_service": FEATURE_SERVICE, "entities": entities},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text[:500]
    served = online_rows(reply.json(), types)
    trained = offline_rows(trained_df, types)
    assert len(served) == len(trained) == len(requests_df)
    mismatches = [
        (i, name, served[i][name], trained[i][name])
        for i in range(len(served))
        for name in types
        if served[i][name] != trained[i][name]
    ]
    assert mismatches == []
    assert sum(v is not None for row in served for v in row.values()) > len(served)


def test_helm_test_passes(kind_cluster: Cluster) -> None:
    # The pod wants every feature of its customer PRESENT: that customer's hourly
    # counters are pushed first, as the payment stream keeps them (the sample's are older).
    values = json.loads(kind_cluster.helm("get", "values", RELEASE, "--all", "-o", "json"))
    deployment = kind_cluster.get("deployment", f"{FULL}-server")
    name = f"push-counters-{int(time.time())}"
    customers = [values["helmTest"]["customerId"]]
    kind_cluster.apply(push_counters_job(deployment, name, "dev", customers))
    kind_cluster.wait_job(name)
    kind_cluster.helm("test", RELEASE, "--timeout", "300s", "--logs")


LOAD_SCRIPT = """
import json, os, time, requests
url = os.environ["TARGET"] + "/get-online-features"
body = {"feature_service": "fraud_detection_v1",
        "entities": {"customer_id": [1], "merchant_id": [1], "amount": [10.0]}}
ok, failed, errors = 0, 0, []
end = time.monotonic() + float(os.environ["SECONDS"])
print("load started", flush=True)
while time.monotonic() < end:
    try:
        status = requests.post(url, json=body, timeout=5).status_code
    except requests.RequestException as exc:
        status = type(exc).__name__
    if status == 200:
        ok += 1
    else:
        failed += 1
        errors.append(str(status))
    time.sleep(0.02)
print(json.dumps({"ok": ok, "failed": failed, "errors": errors[:20]}), flush=True)
"""


def test_rolling_restart_drops_no_requests(kind_cluster: Cluster, server: PortForward) -> None:
    """Light load from inside the cluster through the Service while every server pod is
    replaced: maxUnavailable 0, readiness and the preStop sleep must lose no request.
    Each request opens its own connection, as a port-forward cannot follow pods."""
    deployment = kind_cluster.get("deployment", f"{FULL}-server")
    name = f"kind-load-{int(time.time())}"
    job = platform_job(deployment, name, ["-c", LOAD_SCRIPT], command=["python"])
    container = job["spec"]["template"]["spec"]["containers"][0]
    container["env"] = [
        {"name": "TARGET", "value": f"http://{FULL}-server.{NAMESPACE}.svc:80"},
        {"name": "SECONDS", "value": "90"},
    ]
    container.pop("envFrom", None)
    kind_cluster.apply(job)
    deadline = time.monotonic() + 120
    while "load started" not in kind_cluster.kubectl("logs", f"job/{name}", check=False):
        assert time.monotonic() < deadline, "load job did not start"
        time.sleep(2)
    kind_cluster.kubectl("rollout", "restart", f"deployment/{FULL}-server")
    kind_cluster.kubectl("rollout", "status", f"deployment/{FULL}-server", "--timeout=300s")
    kind_cluster.wait_job(name, timeout_s=300)
    summary = json.loads(kind_cluster.kubectl("logs", f"job/{name}").strip().splitlines()[-1])
    assert summary["failed"] == 0, summary
    assert summary["ok"] > 100, summary


def test_config_change_rolls_the_pods(kind_cluster: Cluster) -> None:
    selector = f"app.kubernetes.io/name=feast-platform-server,app.kubernetes.io/instance={RELEASE}"

    def pods() -> dict[str, str]:
        listed = json.loads(kind_cluster.kubectl("get", "pods", "-l", selector, "-o", "json"))
        return {
            p["metadata"]["name"]: p["metadata"]["annotations"]["checksum/config"]
            for p in listed["items"]
            if not p["metadata"].get("deletionTimestamp")
        }

    before = pods()
    kind_cluster.helm(
        "upgrade",
        RELEASE,
        str(ROOT / "helm" / "feast-platform"),
        *helm_values_args("--set", "server.registryTtlSeconds=45"),
    )
    kind_cluster.kubectl("rollout", "status", f"deployment/{FULL}-server", "--timeout=300s")
    deadline = time.monotonic() + 120
    after = pods()
    while set(after) & set(before) and time.monotonic() < deadline:
        time.sleep(2)  # old pods finish their preStop sleep and grace period
        after = pods()
    assert after and not set(after) & set(before), (before, after)
    assert set(after.values()).isdisjoint(before.values())
    settings = kind_cluster.get("configmap", f"{FULL}-settings")["data"]
    assert settings["FEATURE_SERVER_REGISTRY_TTL_SECONDS"] == "45"
