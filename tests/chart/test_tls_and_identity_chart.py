"""TLS and identities as the chart renders them for every client it ships: the servers'
certificate Secret, probes and Certificate; the thin client's file in each auth mode,
equal to `feature-platform client-config`'s; and the helm test pod, whose own script is
run against a stand-in HTTPS server that records what it sends."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from feast import FeatureService
from feast.errors import FeastPermissionError
from feast.permissions.action import AuthzedAction
from feast.permissions.enforcer import enforce_policy
from feast.permissions.permission import Permission
from feast.permissions.user import User
from rendering import (
    NAMESPACE,
    ROOT,
    SCENARIOS,
    RenderError,
    containers,
    find,
    one,
    pod_template,
    render,
    rendered_scenario,
)
from test_identities import _component, _feast_roles, _values

from feature_platform.config import client as client_config

TLS = "ci/tls-values"
K8S = "ci/kubernetes-auth-values"
THIN = "ci/thin-client-values"
SERVERS = {"server", "registry", "offline", "ui"}
TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
OIDC: dict[str, Any] = {
    "type": "oidc",
    "oidc": {
        "discoveryUrl": "https://sso.example.com/realms/ml/.well-known/openid-configuration",
        "clientId": "feast",
        "audience": "feast-api",
        "issuer": "https://sso.example.com/realms/ml",
    },
}
# Certificates from another place than cert-manager.
EXISTING = {
    "tls": {"enabled": True, "existingSecret": "platform-tls", "certManager": {"enabled": False}}
}


def _server(objects: list[dict[str, Any]], part: str) -> tuple[dict, dict]:
    pod = pod_template(one(objects, "Deployment", f"-{part}"))
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] == part]
    return pod, container


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: str(e["value"]) for e in container.get("env", []) if "value" in e}


def _mount_of(container: dict[str, Any], path: str) -> dict[str, Any]:
    (mount,) = [
        m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"] + "/")
    ]
    return mount


# --- the servers ----------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [{}, EXISTING], ids=["cert-manager", "existing-secret"])
@pytest.mark.parametrize("part", sorted(SERVERS))
def test_every_server_serves_tls_from_the_secret(part: str, overrides: dict) -> None:
    objects = render(SCENARIOS[TLS], overrides) if overrides else rendered_scenario(TLS)
    certificates = find(objects, "Certificate")
    if overrides:
        assert certificates == [], "an existing Secret needs no Certificate"
        secret = "platform-tls"
    else:
        (certificate,) = certificates
        secret = certificate["spec"]["secretName"]
    pod, container = _server(objects, part)
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    env = _env(container)
    for name, key in (("TLS_CERT_FILE", "tls.crt"), ("TLS_KEY_FILE", "tls.key")):
        mount = _mount_of(container, env[name])
        assert mount["readOnly"] is True
        assert env[name] == f"{mount['mountPath']}/{key}", "the kubernetes.io/tls key names"
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == secret
        assert key in {i["path"] for i in source.get("items", [])} or "items" not in source
    http_probes = 0
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        handler = container[probe]
        # The kubelet's gRPC probe speaks plaintext only: TLS gRPC is probed by its port.
        assert "grpc" not in handler, f"{part} {probe}"
        if "httpGet" in handler:
            assert handler["httpGet"]["scheme"] == "HTTPS", f"{part} {probe}"
            http_probes += 1
        else:
            assert part in ("registry", "offline") and "tcpSocket" in handler
    assert http_probes == (3 if part in ("server", "ui") else 0)


@pytest.mark.parametrize("part", sorted(SERVERS))
def test_without_tls_no_server_gets_a_certificate(part: str) -> None:
    objects = render(SCENARIOS[TLS], {"tls": {"enabled": False}})
    assert find(objects, "Certificate") == []
    pod, container = _server(objects, part)
    assert "tls" not in {v["name"] for v in pod["spec"]["volumes"]}
    assert not {"TLS_CERT_FILE", "TLS_KEY_FILE"} & _env(container).keys()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe].get("httpGet", {}).get("scheme", "HTTP") == "HTTP"


def test_tls_without_a_certificate_source_is_refused() -> None:
    with pytest.raises(RenderError, match=r"tls\.existingSecret is required"):
        render(SCENARIOS["dev"], {"tls": {"enabled": True}})
    with pytest.raises(RenderError, match=r"tls\.certManager\.issuerRef\.name is required"):
        render(SCENARIOS["dev"], {"tls": {"enabled": True, "certManager": {"enabled": True}}})


def _hosts_clients_use(objects: list[dict[str, Any]]) -> set[str]:
    """Every server host name a rendered client is given: env URLs and the client file."""
    hosts = set()
    for obj in objects:
        pod = pod_template(obj)
        for c in containers(pod) if pod else []:
            for value in _env(c).values():
                if value.startswith("https://"):
                    hosts.add(str(urlsplit(value).hostname))
    client = yaml.safe_load(one(objects, "ConfigMap", "-client")["data"]["feature_store.yaml"])
    hosts.add(client["registry"]["path"].rpartition(":")[0])
    hosts.add(client["offline_store"]["host"])
    hosts.add(str(urlsplit(client["online_store"]["path"]).hostname))
    return hosts


def test_the_certificate_names_every_server_service() -> None:
    objects = rendered_scenario(TLS)
    certificate = one(objects, "Certificate")
    names = set(certificate["spec"]["dnsNames"])
    services = [s for s in find(objects, "Service") if _component(s) in SERVERS]
    assert {_component(s) for s in services} == SERVERS
    for service in services:
        name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
        expected = {
            name,
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local",
        }
        assert expected <= names, f"{name}: missing {sorted(expected - names)}"
    hosts = _hosts_clients_use(objects)
    assert len(hosts) >= 3 and hosts <= names, sorted(hosts - names)
    spec = certificate["spec"]
    assert "server auth" in spec["usages"]
    issuer = _values(TLS)["tls"]["certManager"]["issuerRef"]
    assert spec["issuerRef"] == issuer
    extra = render(SCENARIOS[TLS], {"tls": {"certManager": {"extraDnsNames": ["f.example.com"]}}})
    assert "f.example.com" in one(extra, "Certificate")["spec"]["dnsNames"]


# --- the thin client's file -------------------------------------------------------------


def _address(objects: list[dict], part: str, port_name: str) -> str:
    service = one(objects, "Service", f"-{part}")
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == port_name]
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port}"


def _client_file(objects: list[dict]) -> dict[str, Any]:
    return dict(yaml.safe_load(one(objects, "ConfigMap", "-client")["data"]["feature_store.yaml"]))


def _expected(
    objects: list[dict], scheme: str, auth_type: str, **kwargs: Any
) -> client_config.ClientConfig:
    config = client_config.for_environment(
        "dev",
        registry=_address(objects, "registry", "grpc"),
        offline=_address(objects, "offline", "flight"),
        online=f"{scheme}://" + _address(objects, "server", "http"),
        **kwargs,
    )
    return dataclasses.replace(config, auth_type=auth_type)


@pytest.mark.parametrize("ca_file", ["/etc/feast-platform/tls/ca.crt", ""])
def test_the_client_file_with_tls_is_the_client_config_commands(ca_file: str) -> None:
    objects = render(SCENARIOS[TLS], {"clientConfig": {"caFile": ca_file}})
    expected = _expected(objects, "https", "no_auth", tls=True, ca_file=ca_file or None)
    written = _client_file(objects)
    assert written == expected.as_dict()
    assert written["online_store"]["path"].startswith("https://")
    assert written["offline_store"]["scheme"] == "https"
    if ca_file:
        assert written["registry"]["cert"] == written["online_store"]["cert"] == ca_file
    else:
        assert written["registry"]["is_tls"] is True


@pytest.mark.parametrize("write_env", ["", "MY_TOKEN"])
@pytest.mark.parametrize("auth_type", ["no_auth", "oidc", "kubernetes"])
def test_the_client_files_auth_is_the_client_config_commands(
    auth_type: str, write_env: str
) -> None:
    auth = OIDC if auth_type == "oidc" else {"type": auth_type}
    overrides: dict[str, Any] = {
        "auth": auth,
        "clientConfig": {"writeCredentialEnvVar": write_env},
        # The shared write token is no_auth's; the others decide writes by role.
        "server": {"write": {"mode": "token" if auth_type == "no_auth" else "open"}},
    }
    objects = render(SCENARIOS[THIN], overrides)
    expected = _expected(objects, "http", auth_type, write_token_env=write_env or None)
    written = _client_file(objects)
    assert written == expected.as_dict()
    assert (
        written["auth"]
        == {
            "no_auth": {"type": "oidc", "token_env_var": write_env}
            if write_env
            else {"type": "no_auth"},
            "oidc": {"type": "oidc", "token_env_var": write_env or "FEAST_OIDC_TOKEN"},
            "kubernetes": {"type": "kubernetes"},
        }[auth_type]
    )


# --- the helm test pod --------------------------------------------------------------------


def _test_pod(objects: list[dict[str, Any]]) -> tuple[dict, dict]:
    pod = one(objects, "Pod", "-test")
    (container,) = pod["spec"]["containers"]
    return pod, container


def _permissions() -> list[Permission]:
    spec = importlib.util.spec_from_file_location(
        "permissions", ROOT / "feature_repo" / "permissions.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return [v for v in vars(module).values() if isinstance(v, Permission)]


def _may_read(roles: set[str], service: str) -> bool:
    user = User(username="helm-test", roles=sorted(roles))
    try:
        enforce_policy(
            _permissions(),
            user,
            [FeatureService(name=service, features=[])],
            [AuthzedAction.READ_ONLINE],
        )
    except FeastPermissionError:
        return False
    return True


def test_the_helm_test_pod_calls_as_its_own_service_account() -> None:
    objects = rendered_scenario(K8S)
    pod, container = _test_pod(objects)
    spec = pod["spec"]
    name = spec["serviceAccountName"]
    assert name == "fp-feast-platform-test"
    assert name in {o["metadata"]["name"] for o in find(objects, "ServiceAccount")}
    assert spec["automountServiceAccountToken"] is False
    env = _env(container)
    assert env["SERVER_AUTH_TYPE"] == "kubernetes"
    assert env["TOKEN_FILE"] == TOKEN_FILE
    mount = _mount_of(container, TOKEN_FILE)
    volume = {v["name"]: v for v in spec["volumes"]}[mount["name"]]
    sources = volume["projected"]["sources"]
    (token,) = [s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s]
    assert f"{mount['mountPath']}/{token['path']}" == TOKEN_FILE
    # Feast gives it the roles of its RoleBindings, and they let it read what it asks for.
    roles = _feast_roles(objects, NAMESPACE, name)
    assert roles == set(_values(K8S)["auth"]["kubernetes"]["helmTestRoles"])
    script = container["args"][0]
    assert '"feature_service": "fraud_detection_v1"' in script
    assert _may_read(roles, "fraud_detection_v1")
    assert not _may_read(roles - {"fraud-detection-v1"}, "fraud_detection_v1")


@pytest.mark.parametrize("scenario", ["dev", THIN])
def test_without_identities_the_helm_test_pod_has_none(scenario: str) -> None:
    objects = rendered_scenario(scenario)
    pod, container = _test_pod(objects)
    assert "serviceAccountName" not in pod["spec"]
    assert "TOKEN_FILE" not in _env(container)
    assert not find(objects, "ServiceAccount", "-test")


def test_the_helm_test_pod_verifies_the_servers_ca() -> None:
    objects = rendered_scenario(TLS)
    pod, container = _test_pod(objects)
    env = _env(container)
    assert urlsplit(env["SERVER_URL"]).scheme == "https"
    mount = _mount_of(container, env["TLS_CA_FILE"])
    assert mount["readOnly"] is True
    source = {v["name"]: v for v in pod["spec"]["volumes"]}[mount["name"]]["secret"]
    assert source["secretName"] == one(objects, "Certificate")["spec"]["secretName"]
    # The CA only: the pod never holds the servers' private key.
    assert source["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert env["TLS_CA_FILE"] == f"{mount['mountPath']}/ca.crt"


# The pod's script against a stand-in server over TLS from a test CA.

ANSWER = {
    "metadata": {"feature_names": ["customer_id", "customer_stats__txn_count_7d"]},
    "results": [
        {"values": [1], "statuses": ["PRESENT"]},
        {"values": [3], "statuses": ["PRESENT"]},
    ],
}


class StandIn(ThreadingHTTPServer):
    """Answers /ready, and /get-online-features to a caller with `token` (401 otherwise,
    unless `open_reads`); records each request's path and Authorization header."""

    token: str | None
    open_reads: bool
    seen: list[tuple[str, str | None]]


class Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("authorization")))
        self._reply(200 if self.path == "/ready" else 404, {"status": "ready"})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        header = self.headers.get("authorization")
        self.server.seen.append((self.path, header))
        if self.server.open_reads or (
            self.server.token is not None and header == f"Bearer {self.server.token}"
        ):
            self._reply(200, ANSWER)
        else:
            self._reply(401, {"error": "unauthorized", "detail": "a bearer token is needed"})

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    from tls_fixtures import make_tls_files

    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def stand_in(tls_files: Any) -> Iterator[StandIn]:
    server = StandIn(("127.0.0.1", 0), Handler)
    server.token, server.open_reads, server.seen = None, False, []
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _run_pod_script(
    objects: list[dict[str, Any]], server: StandIn, ca: Path, token_file: Path | None
) -> subprocess.CompletedProcess[str]:
    """The pod's script with its rendered env, the server's address, CA and token paths
    made local."""
    _, container = _test_pod(objects)
    env = _env(container)
    env["SERVER_URL"] = f"https://localhost:{server.server_address[1]}"
    env["TLS_CA_FILE"] = str(ca)
    if token_file is not None:
        env["TOKEN_FILE"] = str(token_file)
    assert container["command"] == ["python", "-c"]
    return subprocess.run(
        [sys.executable, "-c", container["args"][0]],
        env={**env, "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_helm_test_pod_sends_its_token_over_verified_tls(
    stand_in: StandIn, tls_files: Any, tmp_path: Path
) -> None:
    objects = render(SCENARIOS[K8S], EXISTING)
    token = tmp_path / "token"
    token.write_text("service-account-token\n")
    stand_in.token = "service-account-token"
    done = _run_pod_script(objects, stand_in, tls_files.ca, token)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stand_in.seen == [("/get-online-features", "Bearer service-account-token")]
    assert "all 1 features PRESENT" in done.stdout
    # A server whose certificate another CA signed is refused before anything is sent.
    stand_in.seen.clear()
    done = _run_pod_script(objects, stand_in, tls_files.other_ca, token)
    assert done.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert stand_in.seen == []


def test_the_helm_test_pod_without_a_token_fails_against_kubernetes_auth(
    stand_in: StandIn, tls_files: Any, tmp_path: Path
) -> None:
    objects = render(SCENARIOS[K8S], EXISTING)
    token = tmp_path / "token"
    token.write_text("another-token")
    stand_in.token = "service-account-token"
    done = _run_pod_script(objects, stand_in, tls_files.ca, token)
    assert done.returncode != 0 and done.stdout.startswith("401")


def test_the_helm_test_pod_with_oidc_checks_readiness_and_refusal(
    stand_in: StandIn, tls_files: Any
) -> None:
    objects = render(SCENARIOS["dev"], {"auth": OIDC, **EXISTING})
    _, container = _test_pod(objects)
    assert _env(container)["SERVER_AUTH_TYPE"] == "oidc"
    done = _run_pod_script(objects, stand_in, tls_files.ca, None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert stand_in.seen == [("/ready", None), ("/get-online-features", None)]
    assert "no token for this pod" in done.stdout
    # A server that answers a read without a token has no identities on: the test fails.
    stand_in.open_reads = True
    done = _run_pod_script(objects, stand_in, tls_files.ca, None)
    assert done.returncode != 0, done.stdout


def test_the_skew_check_holds_the_servers_ca_only() -> None:
    objects = rendered_scenario(TLS)
    cronjob = one(objects, "CronJob", "-skew-check")
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    mount = _mount_of(container, env["TLS_CA_FILE"])
    source = {v["name"]: v for v in pod["spec"]["volumes"]}[mount["name"]]["secret"]
    assert source["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
