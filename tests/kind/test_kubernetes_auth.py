"""Kubernetes identities on a real cluster: the release upgraded to auth.type kubernetes,
callers holding ServiceAccount tokens the API server minted, their roles read from the
chart's RoleBindings, and the skew check calling with its own pod's token.

The module upgrades the session's release and puts it back to the dev values afterwards,
so the other kind tests see the release they expect.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cluster import CHART, NAMESPACE, RELEASE, Cluster, PortForward, helm_values_args

from feature_platform import training

FULL = f"{RELEASE}-feast-platform"
UNKNOWN_SA = "kind-unbound-caller"
# A created client holding the reader role, as values give one.
CLIENT_SA = "kind-reader"
VALUES = {
    "auth": {
        "type": "kubernetes",
        "kubernetes": {
            "clients": [{"name": CLIENT_SA, "roles": ["feature-reader"], "create": True}]
        },
    },
    # Writes are decided by the feature-writer role.
    "server": {"write": {"mode": "open"}},
    "skewCheck": {"enabled": True, "suspend": True, "rows": 50},
}


def _upgrade(cluster: Cluster, *extra: str) -> None:
    cluster.helm("upgrade", RELEASE, str(CHART), *helm_values_args(*extra), timeout=900)
    cluster.kubectl("rollout", "status", f"deployment/{FULL}-server", "--timeout=600s")


@pytest.fixture(scope="module")
def kubernetes_auth(
    kind_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    values = Path(tmp_path_factory.mktemp("auth")) / "kubernetes-auth.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    kind_cluster.kubectl("create", "serviceaccount", UNKNOWN_SA, check=False)
    _upgrade(kind_cluster, "-f", str(values))
    try:
        yield kind_cluster
    finally:
        _upgrade(kind_cluster)
        kind_cluster.kubectl("delete", "serviceaccount", UNKNOWN_SA, "--ignore-not-found")


@pytest.fixture(scope="module")
def server(kubernetes_auth: Cluster) -> Iterator[PortForward]:
    forward = PortForward(kubernetes_auth, f"{FULL}-server", 80)
    forward.wait_http("/ready")
    yield forward
    forward.close()


def _token(cluster: Cluster, service_account: str) -> str:
    """A token of the ServiceAccount from the API server (the audience it checks itself)."""
    return cluster.kubectl("create", "token", service_account, "--duration=10m").strip()


def _forged(service_account: str) -> str:
    """An unsigned JWT naming the ServiceAccount: what Feast's own parser would trust."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    now = int(time.time())
    claims = {
        "iss": "https://kubernetes.default.svc.cluster.local",
        "sub": f"system:serviceaccount:{NAMESPACE}:{service_account}",
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "iat": now,
        "exp": now + 600,
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def _read(server: PortForward, token: str | None, service: bool = False) -> requests.Response:
    """Two views' features by reference, or the restricted feature service."""
    entities: dict[str, list[Any]] = {"customer_id": [1, 2], "merchant_id": [1, 2]}
    if service:
        body: dict[str, Any] = {"feature_service": training.FEATURE_SERVICE}
        entities["amount"] = [10.0, 20.0]
    else:
        body = {"features": ["customer_stats:n_purchases_7d", "merchant_stats:n_sales_30d"]}
    return requests.post(
        f"{server.url}/get-online-features",
        json={**body, "entities": entities},
        headers={"Authorization": f"Bearer {token}"} if token else {},
        timeout=30,
    )


def _push(server: PortForward, token: str) -> requests.Response:
    event = datetime.now(UTC) - timedelta(minutes=1)
    rows = {
        "customer_id": [199],
        "event_timestamp": [event.isoformat()],
        "n_txn_1h": [2],
        "sum_amount_1h": [12.5],
    }
    return requests.post(
        f"{server.url}/push",
        json={"push_source_name": "customer_txn_1h_push", "df": rows, "to": "online"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def _refused(reply: requests.Response, status: int, token: str | None) -> None:
    assert reply.status_code == status, reply.text[:500]
    body = reply.json()
    assert set(body) == {"error", "detail"}, body
    if token:
        assert token not in reply.text and token.split(".")[1] not in reply.text


def test_servers_and_jobs_run_as_their_own_service_accounts(kubernetes_auth: Cluster) -> None:
    deployment = kubernetes_auth.get("deployment", f"{FULL}-server")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULL}-server"
    for job in ("materialize", "skew-check"):
        cronjob = kubernetes_auth.get("cronjob", f"{FULL}-{job}")
        pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == f"{FULL}-{job}"


def test_the_servers_may_review_tokens_and_read_bindings_only(kubernetes_auth: Cluster) -> None:
    """The API server's own answer for the servers' ServiceAccount: least privilege."""
    who = f"system:serviceaccount:{NAMESPACE}:{FULL}-server"

    def can(*what: str) -> str:
        return kubernetes_auth.kubectl("auth", "can-i", *what, f"--as={who}", check=False).strip()

    assert can("create", "tokenreviews.authentication.k8s.io") == "yes"
    assert can("list", "rolebindings.rbac.authorization.k8s.io") == "yes"
    assert can("list", "rolebindings.rbac.authorization.k8s.io", "-n", "default") == "no"
    assert can("get", "secrets") == "no"
    assert can("list", "pods") == "no"
    assert can("create", "rolebindings.rbac.authorization.k8s.io") == "no"
    writer = f"system:serviceaccount:{NAMESPACE}:{FULL}-materialize"
    assert (
        kubernetes_auth.kubectl(
            "auth",
            "can-i",
            "create",
            "tokenreviews.authentication.k8s.io",
            f"--as={writer}",
            check=False,
        ).strip()
        == "no"
    )


def test_service_account_tokens_get_their_roles(
    kubernetes_auth: Cluster, server: PortForward
) -> None:
    """The skew check's and a client's tokens read, the materialize job's pushes; a reader
    may not push nor read the service kept to its own role, which the skew check holds; a
    ServiceAccount nothing binds is refused; a forged token naming the writer and a
    missing token are not authenticated."""
    reader = _token(kubernetes_auth, f"{FULL}-skew-check")
    client = _token(kubernetes_auth, CLIENT_SA)
    writer = _token(kubernetes_auth, f"{FULL}-materialize")
    unbound = _token(kubernetes_auth, UNKNOWN_SA)

    for token in (reader, client):
        reply = _read(server, token)
        assert reply.status_code == 200, reply.text[:500]
        assert reply.json()["results"], "a read with the reader role returns vectors"
    _refused(_push(server, reader), 403, reader)
    _refused(_read(server, client, service=True), 403, client)
    reply = _read(server, reader, service=True)
    assert reply.status_code == 200, reply.text[:500]
    reply = _push(server, writer)
    assert reply.status_code == 200, reply.text[:500]

    _refused(_read(server, unbound), 403, unbound)
    forged = _forged(f"{FULL}-materialize")
    _refused(_push(server, forged), 401, forged)
    _refused(_read(server, forged), 401, forged)
    _refused(_read(server, None), 401, None)


def test_the_skew_check_calls_with_its_own_token(kubernetes_auth: Cluster) -> None:
    """The CronJob's pod, not a test: its projected token is its only credential."""
    name = f"{FULL}-skew-check-auth-{int(time.time())}"
    kubernetes_auth.kubectl("create", "job", f"--from=cronjob/{FULL}-skew-check", name)
    # It exits 0 only when every sampled vector was served (and matched).
    kubernetes_auth.wait_job(name, timeout_s=600)
