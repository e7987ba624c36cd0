"""Identities and permissions on every server, against a stand-in OIDC provider.

One dev stack with `AUTH_TYPE=oidc` and the repository's permissions applied, served by
the feature server (both paths: the fast path, and Feast's own app for
`full_feature_names=true`), the registry server (gRPC and REST), the offline server and
the UI. Every case of the matrix is tried on each, and the counts printed (pytest -s):
cases tried, wrongly allowed, wrongly denied. Then the provider goes away: tokens signed
with cached keys keep working, a token signed with a new key fails within the fetch
deadline, and the server keeps answering meanwhile.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import jwt
import pandas as pd
import pytest
import requests
import yaml
from conftest import StackFactory, deploy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from feast import FeatureStore
from feast.protos.feast.registry import RegistryServer_pb2, RegistryServer_pb2_grpc
from oidc_provider import DISCOVERY_PATH, OidcProvider, new_key, send_json
from stacks import Stack

from feature_platform.auth.kubernetes import KubernetesVerifier
from feature_platform.auth.oidc import OidcVerifier
from feature_platform.config import feast_commands
from feature_platform.config.auth import AuthSettings
from feature_platform.devtools.launcher import FeatureServer, PlatformServer, free_port
from feature_platform.errors import HTTPError

pytestmark = pytest.mark.integration

PROJECT = "fraud_detection"
FETCH_TIMEOUT_S = 1.0
# A request may take this long before it counts as hung: the fetch deadline plus the
# time a loaded two-core machine needs for the rest of the request.
HUNG_S = FETCH_TIMEOUT_S + 9
READ = {"entities": {"customer_id": [1, 2, 3]}, "features": ["customer_stats:avg_purchase_30d"]}
PUSH_SOURCE = "customer_txn_1h_push"
DENIED_TOKENS = ("none", "bad signature", "expired", "wrong audience", "wrong issuer")
ALLOWED = "allowed"


@dataclass
class Tally:
    tried: int = 0
    wrongly_allowed: int = 0
    wrongly_denied: int = 0
    by_server: Counter[str] = field(default_factory=Counter)

    def record(self, server: str, expected: int, got: int) -> None:
        self.tried += 1
        self.by_server[server] += 1
        if expected >= 400 and got < 400:
            self.wrongly_allowed += 1
        if expected < 400 and got >= 400:
            self.wrongly_denied += 1


TALLY = Tally()


@dataclass
class Servers:
    idp: OidcProvider
    stack: Stack
    feature: FeatureServer
    registry: PlatformServer
    offline: PlatformServer
    ui_url: str
    tmp: Path

    def tokens(self, forged_with: RSAPrivateKey) -> dict[str, str | None]:
        idp = self.idp
        return {
            "none": None,
            "bad signature": idp.token(client_roles=["feature-reader"], signed_by=forged_with),
            "expired": idp.token(client_roles=["feature-reader"], expires_in_s=-120),
            "wrong audience": idp.token(client_roles=["feature-reader"], audience="another-api"),
            "wrong issuer": idp.token(
                client_roles=["feature-reader"], issuer="http://127.0.0.1:1/realms/other"
            ),
            # Feast's two places for roles: the client's, and the top-level claim
            "feature-reader": idp.token(client_roles=["feature-reader"], username="reader"),
            "feature-writer": idp.token(roles=["feature-writer"], username="writer"),
            "training": idp.token(client_roles=["training"], username="trainer"),
        }


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def _ui_process(stack: Stack, port: int, log: Path) -> Any:
    import subprocess

    with stack.active():
        env = feast_commands.prepare("dev")
    argv = [sys.executable, "-m", "feature_platform", "ui", "dev", "--host", "127.0.0.1"]
    with log.open("wb") as out:
        return subprocess.Popen([*argv, "--port", str(port)], env=env, stdout=out, stderr=out)


def _wait_http(url: str, process: Any, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url} exited"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def servers(
    stack_factory: StackFactory,
    generated_tables: dict[str, pd.DataFrame],
    idp: OidcProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Servers]:
    stack = deploy(
        stack_factory("dev", "auth", extra=idp.settings(FETCH_TIMEOUT_S)), generated_tables
    )
    tmp = tmp_path_factory.mktemp("auth")
    logs = {name: (tmp / f"{name}.log").open("wb") for name in ("feature", "registry", "offline")}
    feature = FeatureServer(
        "dev", log=logs["feature"], settings={"FEATURE_SERVER_WRITE_MODE": "open"}
    )
    registry = PlatformServer("dev", "registry", log=logs["registry"])
    offline = PlatformServer("dev", "offline", log=logs["offline"])
    ui_port = free_port()
    with stack.active():
        for server in (feature, registry, offline):
            server.launch()
    ui = _ui_process(stack, ui_port, tmp / "ui.log")
    try:
        feature.wait_ready()
        registry.wait_ready()
        offline.wait_ready()
        _wait_http(f"http://127.0.0.1:{ui_port}/health", ui)
        yield Servers(idp, stack, feature, registry, offline, f"http://127.0.0.1:{ui_port}", tmp)
    finally:
        ui.terminate()
        ui.wait(timeout=30)
        for server in (feature, registry, offline):
            server.stop()
        for log in logs.values():
            log.close()
        print(
            f"\nauth matrix: {TALLY.tried} cases tried, {TALLY.wrongly_allowed} wrongly "
            f"allowed, {TALLY.wrongly_denied} wrongly denied ({dict(TALLY.by_server)})"
        )


@pytest.fixture(scope="module")
def tokens(servers: Servers) -> dict[str, str | None]:
    return servers.tokens(new_key())


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def _check_http(where: str, response: requests.Response, expected: int, token: str | None) -> None:
    TALLY.record(where, expected, response.status_code)
    assert response.status_code == expected, (where, response.status_code, response.text[:300])
    if expected >= 400:
        body = response.json()
        assert set(body) == {"error", "detail"}, body
        if token:
            assert token not in response.text
            assert token.split(".")[2][:16] not in response.text


def _expected(name: str, allowed: tuple[str, ...]) -> int:
    if name in DENIED_TOKENS:
        return 401
    return 200 if name in allowed else 403


# --- the feature server: both read paths, and writes -----------------------------------


@pytest.mark.parametrize("path", ["fast path", "Feast's path"])
def test_online_reads(servers: Servers, tokens: dict[str, str | None], path: str) -> None:
    body = {**READ, "full_feature_names": path == "Feast's path"}
    for name, token in tokens.items():
        response = requests.post(
            f"{servers.feature.url}/get-online-features",
            json=body,
            headers=_headers(token),
            timeout=HUNG_S,
        )
        expected = _expected(name, ("feature-reader", "feature-writer"))
        _check_http(f"feature server read ({path})", response, expected, token)
        if expected == 200:
            names = response.json()["metadata"]["feature_names"]
            assert any("avg_purchase_30d" in n for n in names)


def test_a_feature_service_is_read_by_its_own_role_only(servers: Servers) -> None:
    idp = servers.idp
    body = {
        "entities": {"customer_id": [1], "merchant_id": [1], "amount": [10.0]},
        "feature_service": "fraud_detection_v1",
    }
    for roles, expected in ((["feature-reader"], 403), (["fraud-detection-v1"], 200)):
        token = idp.token(client_roles=roles)
        for full_names in (False, True):
            response = requests.post(
                f"{servers.feature.url}/get-online-features",
                json={**body, "full_feature_names": full_names},
                headers=_headers(token),
                timeout=HUNG_S,
            )
            path = "Feast's path" if full_names else "fast path"
            if response.status_code == 422 and expected == 200:
                pytest.fail(f"request shape refused: {response.text}")
            _check_http(f"feature server service ({path})", response, expected, token)


def _push_rows() -> dict[str, list[Any]]:
    event = datetime.now(UTC) - timedelta(minutes=1)
    return {
        "customer_id": [99_001],
        "event_timestamp": [event.isoformat()],
        "n_txn_1h": [3],
        "sum_amount_1h": [31.5],
    }


def test_pushes(servers: Servers, tokens: dict[str, str | None]) -> None:
    for name, token in tokens.items():
        response = requests.post(
            f"{servers.feature.url}/push",
            json={"push_source_name": PUSH_SOURCE, "df": _push_rows(), "to": "online"},
            headers=_headers(token),
            timeout=HUNG_S,
        )
        _check_http("feature server push", response, _expected(name, ("feature-writer",)), token)


def test_writes_to_the_online_store(servers: Servers, tokens: dict[str, str | None]) -> None:
    rows = _push_rows()
    rows["created_timestamp"] = rows["event_timestamp"]
    for name, token in tokens.items():
        response = requests.post(
            f"{servers.feature.url}/write-to-online-store",
            json={"feature_view_name": "customer_txn_1h", "df": rows},
            headers=_headers(token),
            timeout=HUNG_S,
        )
        expected = _expected(name, ("feature-writer",))
        _check_http("feature server write-to-online-store", response, expected, token)


def test_probes_stay_open(servers: Servers) -> None:
    for probe in ("/health", "/ready", "/metrics"):
        assert requests.get(f"{servers.feature.url}{probe}", timeout=HUNG_S).status_code == 200


# --- the registry server: gRPC and REST ------------------------------------------------

_GRPC_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _grpc_list(address: str, token: str | None) -> tuple[int, str, int]:
    """(status as HTTP, details, number of views) of ListFeatureViews."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        stub = RegistryServer_pb2_grpc.RegistryServerStub(channel)
        request = RegistryServer_pb2.ListFeatureViewsRequest(project=PROJECT, allow_cache=True)
        try:
            reply = stub.ListFeatureViews(request, metadata=metadata, timeout=HUNG_S)
        except grpc.RpcError as exc:
            return _GRPC_STATUS.get(exc.code(), 500), exc.details() or "", 0
    return 200, "", len(reply.feature_views)


def test_registry_grpc(servers: Servers, tokens: dict[str, str | None]) -> None:
    for name, token in tokens.items():
        status, details, n_views = _grpc_list(servers.registry.address, token)
        expected = _expected(name, ("feature-reader", "feature-writer", "training"))
        TALLY.record("registry gRPC", expected, status)
        assert status == expected, (name, status, details)
        if token:
            assert token not in details
        if status == 200:
            assert n_views > 0


def test_registry_rest(servers: Servers, tokens: dict[str, str | None]) -> None:
    url = f"http://127.0.0.1:{servers.registry.rest_port}/api/v1/feature_views"
    for name, token in tokens.items():
        response = requests.get(
            url, params={"project": PROJECT}, headers=_headers(token), timeout=HUNG_S
        )
        expected = _expected(name, ("feature-reader", "feature-writer", "training"))
        _check_http("registry REST", response, expected, token)


def test_ui_api(servers: Servers, tokens: dict[str, str | None]) -> None:
    assert requests.get(f"{servers.ui_url}/", timeout=HUNG_S).status_code == 200
    for name, token in tokens.items():
        response = requests.get(
            f"{servers.ui_url}/api/v1/feature_views",
            params={"project": PROJECT},
            headers=_headers(token),
            timeout=HUNG_S,
        )
        expected = _expected(name, ("feature-reader", "feature-writer", "training"))
        _check_http("UI API", response, expected, token)


# --- the offline server, through Feast's SDK as a thin client ---------------------------


def _thin_client(servers: Servers, token: str | None, name: str) -> FeatureStore:
    config: dict[str, Any] = {
        "project": PROJECT,
        "provider": "local",
        "registry": {"registry_type": "remote", "path": servers.registry.address},
        "offline_store": {"type": "remote", "host": "127.0.0.1", "port": servers.offline.port},
        "online_store": {"type": "remote", "path": servers.feature.url},
        "entity_key_serialization_version": 3,
        "auth": {"type": "oidc", "token": token} if token else {"type": "no_auth"},
    }
    repo = servers.tmp / f"client_{name.replace(' ', '_')}"
    repo.mkdir(exist_ok=True)
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return FeatureStore(repo_path=str(repo))


def _offline_read(servers: Servers, token: str | None, name: str) -> tuple[int, str]:
    labels = pd.DataFrame(
        {"customer_id": [1, 2], "event_timestamp": [datetime.now(UTC) - timedelta(hours=1)] * 2}
    )
    try:
        store = _thin_client(servers, token, name)
        frame = store.get_historical_features(
            entity_df=labels, features=["customer_stats:avg_purchase_30d"]
        ).to_df()
    except Exception as exc:  # the client raises whatever its transport raised
        text = f"{type(exc).__name__}: {exc}"
        if "Unauthenticated" in text or "UNAUTHENTICATED" in text or "401" in text:
            return 401, text
        if "ermission" in text or "PERMISSION_DENIED" in text or "403" in text:
            return 403, text
        return 500, text
    return (200 if len(frame) == 2 else 500), ""


def test_offline_reads(servers: Servers, tokens: dict[str, str | None]) -> None:
    for name, token in tokens.items():
        status, text = _offline_read(servers, token, name)
        # the registry read comes first: a reader may describe, only training reads offline
        expected = _expected(name, ("training",))
        TALLY.record("offline server", expected, status)
        assert status == expected, (name, status, text[:400])
        if token:
            assert token not in text


def test_offline_server_calls(servers: Servers, tokens: dict[str, str | None]) -> None:
    """The offline server's own check, on a call any authenticated caller may make (the
    thin client above meets the registry's first)."""
    import pyarrow.flight as fl

    client = fl.FlightClient(f"grpc+tcp://{servers.offline.address}")
    try:
        for name, token in tokens.items():
            headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
            options = fl.FlightCallOptions(timeout=HUNG_S, headers=headers)
            try:
                list(client.list_flights(options=options))
                status, text = 200, ""
            except fl.FlightUnauthenticatedError as exc:
                status, text = 401, str(exc)
            expected = 401 if name in DENIED_TOKENS else 200
            TALLY.record("offline server (Flight call)", expected, status)
            assert status == expected, (name, text)
            if token:
                assert token not in text
    finally:
        client.close()


# --- the identity provider goes away ---------------------------------------------------
# In this order: the verifier refuses a key it did not find in a refresh started less
# than a second before (tokens with invented key ids must not drive fetches), and the
# stopped-provider case ends with such a refresh.


def _read(servers: Servers, token: str, results: dict[str, Any], key: str) -> None:
    try:
        results[key] = requests.post(
            f"{servers.feature.url}/get-online-features",
            json=READ,
            headers=_headers(token),
            timeout=HUNG_S,
        )
    except requests.RequestException as exc:
        results[key] = exc


def _until(check: Callable[[], bool], attempts: int = 40) -> bool:
    for _ in range(attempts):
        if check():
            return True
        time.sleep(0.25)
    return False


def test_provider_hanging_fails_new_keys_within_the_deadline_without_stalling(
    servers: Servers,
) -> None:
    idp = servers.idp
    cached_key = idp.token(
        client_roles=["feature-reader"], username="during-stall", key=idp.keys[0]
    )
    # A refresh an earlier test caused less than the server verifier's min_refresh_s (1 s)
    # ago would answer the new key 401 without asking the provider.
    time.sleep(1.0)
    rotated = idp.rotate()
    new_kid = idp.token(client_roles=["feature-reader"], key=rotated)
    idp.stall()
    results: dict[str, Any] = {}
    try:
        waiting = threading.Thread(target=_read, args=(servers, new_kid, results, "new"))
        waiting.start()
        # while that request waits on the provider, the same single worker answers others
        _read(servers, cached_key, results, "cached")
        waiting.join(HUNG_S + 5)
    finally:
        idp.release()
    cached, new = results["cached"], results["new"]
    assert isinstance(cached, requests.Response), f"a cached-key read hung: {cached}"
    _check_http("provider hanging: cached key", cached, 200, cached_key)
    assert isinstance(new, requests.Response), f"a new-key read hung: {new}"
    _check_http("provider hanging: new key", new, 503, new_kid)
    assert "did not answer" in new.json()["detail"] or "unreachable" in new.json()["detail"]


def test_provider_stopped_cached_keys_serve_new_keys_fail(servers: Servers) -> None:
    idp = servers.idp
    idp.stop()
    try:
        # freshly minted with the first key, so nothing about it is cached but the key
        cached_key = idp.token(
            client_roles=["feature-reader"], username="while-down", key=idp.keys[0]
        )
        response = requests.post(
            f"{servers.feature.url}/get-online-features",
            json=READ,
            headers=_headers(cached_key),
            timeout=HUNG_S,
        )
        _check_http("provider down: cached key", response, 200, cached_key)
        status, details, _ = _grpc_list(servers.registry.address, cached_key)
        assert status == 200, details
        rotated = idp.rotate()
        new_kid = idp.token(client_roles=["feature-reader"], key=rotated)
        response = requests.post(
            f"{servers.feature.url}/get-online-features",
            json=READ,
            headers=_headers(new_kid),
            timeout=HUNG_S,
        )
        _check_http("provider down: new key", response, 503, new_kid)
        status, details, _ = _grpc_list(servers.registry.address, new_kid)
        assert status == 503, details
    finally:
        idp.start()

    # back: the new key is fetched once asked for, and the token works
    def accepted() -> bool:
        reply = requests.post(
            f"{servers.feature.url}/get-online-features",
            json=READ,
            headers=_headers(new_kid),
            timeout=HUNG_S,
        )
        return reply.status_code == 200

    assert _until(accepted), "a token with the rotated key is refused once the provider is back"


# --- the verifiers on their own ----------------------------------------------------------


def _settings(idp: OidcProvider) -> AuthSettings:
    return AuthSettings.from_env({**idp.settings(FETCH_TIMEOUT_S), "AUTH_ALLOW_NO_AUTH": ""})


def _status(call: Callable[[], Any]) -> tuple[int, str]:
    try:
        call()
    except HTTPError as exc:
        return exc.status, exc.detail
    return 200, ""


def _hmac_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """HS256 over `claims` with `secret` (PyJWT refuses to use a public key so)."""
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64(signature)}"


def test_only_rs256_signed_tokens_with_every_claim_are_accepted() -> None:
    with OidcProvider() as idp:
        verifier = OidcVerifier(_settings(idp))
        good = idp.token(client_roles=["feature-reader"], roles=["training"], groups=["g"])
        user = verifier.user_blocking(f"Bearer {good}")
        # Feast's two places for roles, merged
        assert (user.username, user.roles, user.groups) == (
            "alice",
            ["feature-reader", "training"],
            ["g"],
        )
        public_pem = (
            idp.keys[0]
            .private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        claims = jwt.decode(good, options={"verify_signature": False})
        forged = {
            # the public key used as an HMAC secret: the classic algorithm confusion
            "HS256 with the public key": _hmac_token(claims, public_pem, idp.keys[0].kid),
            "unsigned": jwt.encode(
                claims, None, algorithm="none", headers={"kid": idp.keys[0].kid}
            ),
            "no aud": idp.token(audience=None),
            "no kid": jwt.encode(claims, idp.keys[0].private, algorithm="RS256"),
            "not a JWT": "not-a-token",
        }
        for name, token in forged.items():
            status, detail = _status(lambda t=token: verifier.user_blocking(f"Bearer {t}"))
            assert status == 401, (name, detail)
            assert token not in detail
        for header in ("", "Basic abc", f"Bearer {good} extra", "Bearer"):
            assert _status(lambda h=header: verifier.user_blocking(h))[0] == 401
        verifier.close()


def test_invented_key_ids_cost_the_provider_one_fetch() -> None:
    import asyncio

    with OidcProvider() as idp:
        verifier = OidcVerifier(_settings(idp))
        assert verifier.user_blocking(f"Bearer {idp.token()}").username == "alice"
        before = len(idp.requests)
        time.sleep(verifier.min_refresh_s)  # the first fetch is out of the window

        async def many() -> list[int]:
            tokens = [idp.token(kid=f"invented-{i}") for i in range(20)]
            results = await asyncio.gather(
                *(verifier.user(f"Bearer {t}") for t in tokens), return_exceptions=True
            )
            return [r.status if isinstance(r, HTTPError) else 200 for r in results]

        assert asyncio.run(many()) == [401] * 20
        assert asyncio.run(many()) == [401] * 20
        assert idp.requests[before:] == [DISCOVERY_PATH, "/jwks"]
        verifier.close()


class KubernetesApi:
    """A stand-in Kubernetes API: TokenReview and the RBAC lists the verifier reads."""

    def __init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                token = json.loads(self.rfile.read(length))["spec"]["token"]
                if token == "stall":
                    api.released.wait(30)
                user = api.identities.get(token)
                status: dict[str, Any] = {"authenticated": user is not None}
                if user is not None:
                    status["user"] = {"username": user[0], "groups": user[1]}
                send_json(self, {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                            "spec": {"token": ""}, "status": status})  # fmt: skip

            def do_GET(self) -> None:
                items = (
                    api.cluster_bindings
                    if self.path.startswith(
                        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings"
                    )
                    else api.bindings
                )
                send_json(self, {"apiVersion": "rbac.authorization.k8s.io/v1", "items": items,
                            "metadata": {}})  # fmt: skip

            def log_message(self, *_args: Any) -> None:
                pass

        self.released = threading.Event()
        self.identities = {
            "sa-token": ("system:serviceaccount:feast:trainer", ["system:serviceaccounts:feast"]),
            "user-token": ("jane", ["analysts"]),
            "stall": ("jane", []),
        }
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role"}
        self.bindings = [
            {"metadata": {"name": "b1"}, "roleRef": {**ref, "name": "training"},
             "subjects": [{"kind": "ServiceAccount", "name": "trainer", "namespace": "feast"}]},
            {"metadata": {"name": "b2"}, "roleRef": {**ref, "name": "feature-reader"},
             "subjects": [{"kind": "Group", "name": "analysts"}]},
        ]  # fmt: skip
        self.cluster_bindings = [
            {"metadata": {"name": "c1"}, "roleRef": {**ref, "kind": "ClusterRole",
             "name": "feature-writer"}, "subjects": [{"kind": "User", "name": "jane"}]},
        ]  # fmt: skip
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def test_kubernetes_identities_come_from_the_token_review_within_the_deadline() -> None:
    from kubernetes import client

    api = KubernetesApi()
    try:
        configuration = client.Configuration()
        configuration.host = api.url
        settings = AuthSettings(type="kubernetes", fetch_timeout_s=FETCH_TIMEOUT_S)
        verifier = KubernetesVerifier(settings, client.ApiClient(configuration), namespace="feast")
        trainer = verifier.user_blocking("Bearer sa-token")
        assert trainer.username == "system:serviceaccount:feast:trainer"
        assert (trainer.roles, trainer.namespaces) == (["training"], ["feast"])
        jane = verifier.user_blocking("Bearer user-token")
        assert jane.roles == ["feature-reader", "feature-writer"]
        # a token naming a service account in its unverified claims gets nothing from it
        forged = jwt.encode({"sub": "system:serviceaccount:feast:trainer"}, "x", algorithm="HS256")
        status, detail = _status(lambda: verifier.user_blocking(f"Bearer {forged}"))
        assert status == 401 and forged not in detail
        # an API server that does not answer: 503 once the deadline passes, not a hang
        outcome: dict[str, Any] = {}
        waiting = threading.Thread(
            target=lambda: outcome.update(r=_status(lambda: verifier.user_blocking("Bearer stall")))
        )
        waiting.start()
        waiting.join(HUNG_S)
        assert not waiting.is_alive(), "a TokenReview without an answer hung the caller"
        assert outcome["r"][0] == 503
        verifier.close()
    finally:
        api.close()
