"""TLS on every server the platform runs, and on both stores, with a test CA.

One dev stack whose Redis speaks TLS only and whose PostgreSQL accepts TLS only, reached
with `verify-full`; on it the feature server, the registry server (gRPC and REST), the
offline server and the UI, each serving the test CA's certificate. A client verifying
against that CA gets answers; a plaintext client and one trusting another CA are refused.
The thin-client file made by `client-config --ca-file` reads through all three servers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pyarrow.flight as fl
import pytest
import redis
import requests
from conftest import AS_OF, MAT_END, SEED
from stacks import RUN_ID, Stack, patched_environ
from tls_fixtures import TlsFiles, create_databases, make_tls_files, tls_postgres, tls_redis

from feature_platform.config import client as client_config
from feature_platform.config import feast_commands, tls
from feature_platform.config.guard import ConfigError
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import (
    FeatureServer,
    PlatformServer,
    flight_answers,
    free_port,
    grpc_health,
)
from feature_platform.offline import tables as offline_tables
from feature_platform.servers.ui import UiServer
from feature_platform.training import ENTITY_COLUMNS, FEATURE_SERVICE

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
CALLS = Path(__file__).with_name("thin_client_calls.py")
ENTITY = {"customer_id": [1, 2], "merchant_id": [1, 2], "amount": [10.0, 20.0]}
KEPT_VARIABLES = ("PATH", "LANG", "LC_ALL", "TZ")


@dataclass
class Tls:
    files: TlsFiles
    stack: Stack
    server: FeatureServer
    registry: PlatformServer
    offline: PlatformServer
    ui_url: str
    tables: dict

    def rest_url(self) -> str:
        return f"https://127.0.0.1:{self.registry.rest_port}/api/v1"


def _ui(stack: Stack) -> UiServer:
    """The UI in this process (one Python boot less), on the stack's TLS settings."""
    # As `feature-platform ui` runs: the env file's settings in the process environment.
    with stack.active(), patched_environ(feast_commands.prepare("dev")):
        server = UiServer(stack.store(), "127.0.0.1", free_port(), tls.server_tls())
    server.start()
    return server


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tls]:
    files = make_tls_files(tmp_path_factory.mktemp("tls"))
    logs = tmp_path_factory.mktemp("tls_logs")
    with tls_redis(files) as redis_port, tls_postgres(files) as postgres_port:
        prefix = f"fpt_{RUN_ID}_tls"
        overrides = {
            "POSTGRES_PASSWORD": "",
            "REDIS_PASSWORD": "",
            "POSTGRES_PORT": str(postgres_port),
            "POSTGRES_SSLMODE": "verify-full",
            "POSTGRES_SSLROOTCERT": str(files.ca),
            "REGISTRY_DB": f"{prefix}_registry",
            "OFFLINE_DB": f"{prefix}_offline",
            "REDIS_PORT": str(redis_port),
            "REDIS_DB": "0",
            "REDIS_SSL": "true",
            "REDIS_TLS_OPTIONS": f",ssl_ca_certs={files.ca}",
            **files.server_env(),
            "TLS_CA_FILE": str(files.ca),
        }
        create_databases(
            postgres_port, files.ca, [overrides["REGISTRY_DB"], overrides["OFFLINE_DB"]]
        )
        stack = Stack("dev", overrides)
        tables = generator.generate(SIZES, seed=SEED, as_of=AS_OF)
        # offline_tables builds its own libpq string (sslmode, no sslrootcert): libpq's
        # variable names the CA for it. Feast's connections below use the file's setting.
        with patched_environ({"PGSSLROOTCERT": str(files.ca)}):
            stack.write(tables)
        stack.feast("apply")
        store = stack.store()
        for view in store.list_feature_views():
            store.materialize(MAT_END - view.ttl, MAT_END, feature_views=[view.name])
        processes: list[PlatformServer] = []
        with stack.active():
            for kind in ("registry", "offline"):
                processes.append(
                    PlatformServer("dev", kind, log=(logs / f"{kind}.log").open("wb")).launch()
                )
        ui = _ui(stack)
        try:
            server = stack.server(
                settings={"FEATURE_SERVER_DRAIN_SECONDS": "0"}, log=(logs / "server.log").open("wb")
            )
            for process in processes:
                process.wait_ready()
            ui_url = f"https://127.0.0.1:{ui.socket.getsockname()[1]}"
            yield Tls(files, stack, server, processes[0], processes[1], ui_url, tables)
        finally:
            ui.stop()
            for process in processes:
                process.stop()
            stack.close()


# --- each server: a verifying client succeeds, plaintext and another CA are refused ------


def _https_refusals(url: str, files: TlsFiles, method: str = "GET", **kwargs: object) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        requests.request(method, url, verify=str(files.other_ca), timeout=5, **kwargs)
    plain = url.replace("https://", "http://", 1)
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.request(method, plain, timeout=5, **kwargs)


def test_the_feature_server_serves_https_from_tls_redis(secured: Tls) -> None:
    assert secured.server.url.startswith("https://")
    answer = secured.server.online_features(
        {"customer_id": [int(secured.tables["customer_stats"]["customer_id"].iloc[0])],
         "merchant_id": [1], "amount": [10.0]},
        feature_service=FEATURE_SERVICE,
    )  # fmt: skip
    statuses = {s for column in answer["results"] for s in column["statuses"]}
    assert "PRESENT" in statuses  # read from the TLS Redis, by the registry over verify-full


def test_the_feature_server_refuses_plaintext_and_another_ca(secured: Tls) -> None:
    body = {"feature_service": FEATURE_SERVICE, "entities": ENTITY}
    _https_refusals(f"{secured.server.url}/get-online-features", secured.files, "POST", json=body)


def test_the_registry_grpc_verifies_and_refuses(secured: Tls) -> None:
    address, files = secured.registry.address, secured.files
    assert grpc_health(address, ca_file=str(files.ca)) == "SERVING"
    for ca in (None, str(files.other_ca)):
        with pytest.raises(grpc.RpcError) as refused:
            grpc_health(address, timeout_s=3, ca_file=ca)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_the_registry_rest_verifies_and_refuses(secured: Tls) -> None:
    url = f"{secured.rest_url()}/projects"
    reply = requests.get(url, verify=str(secured.files.ca), timeout=10)
    assert reply.status_code == 200
    assert "fraud_detection" in reply.text
    _https_refusals(url, secured.files)


def test_the_offline_server_verifies_and_refuses(secured: Tls) -> None:
    address, files = secured.offline.address, secured.files
    assert flight_answers(address, ca_file=str(files.ca))
    with open(files.other_ca, "rb") as other:
        client = fl.FlightClient(f"grpc+tls://{address}", tls_root_certs=other.read())
    with pytest.raises(fl.FlightUnavailableError):
        list(client.list_flights(options=fl.FlightCallOptions(timeout=3)))
    client.close()
    plain = fl.FlightClient(f"grpc+tcp://{address}")
    with pytest.raises(fl.FlightUnavailableError):
        list(plain.list_flights(options=fl.FlightCallOptions(timeout=3)))
    plain.close()


def test_the_ui_verifies_and_refuses(secured: Tls) -> None:
    reply = requests.get(f"{secured.ui_url}/", verify=str(secured.files.ca), timeout=10)
    assert reply.status_code == 200
    assert "<html" in reply.text.lower()
    _https_refusals(f"{secured.ui_url}/", secured.files)


# --- the thin client -------------------------------------------------------------------


def _client_row(secured: Tls) -> dict:
    customer = int(secured.tables["customer_stats"]["customer_id"].iloc[0])
    return {"customer_id": customer, "merchant_id": 1, "amount": 10.0}


def _client_run(secured: Tls, work: Path, ca: Path, operation: str) -> dict:
    config = client_config.for_environment(
        "dev",
        registry=secured.registry.address,
        offline=secured.offline.address,
        online=secured.server.url,
        ca_file=str(ca),
    )
    work.mkdir(parents=True)
    (work / "client").mkdir()
    (work / "client" / "feature_store.yaml").write_text(config.render())
    labels = secured.tables["transactions"][ENTITY_COLUMNS].head(20)
    labels.to_parquet(work / "labels.parquet")
    given = {"entity_rows": [_client_row(secured)]}
    (work / "input.json").write_text(
        json.dumps([{"config": "client", "operation": operation, **given}])
    )
    # Nothing but the file: no store settings, no TLS variable, no CA in the environment.
    env = {k: os.environ[k] for k in KEPT_VARIABLES if k in os.environ}
    env["HOME"] = str(work)
    done = subprocess.run(
        [sys.executable, str(CALLS), str(work)],
        env=env, cwd=work, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcome: dict = json.loads((work / "output.json").read_text())[0]
    return outcome


def test_the_thin_client_file_verifies_every_server(secured: Tls, tmp_path: Path) -> None:
    text = client_config.for_environment(
        "dev", secured.registry.address, secured.offline.address, secured.server.url,
        ca_file=str(secured.files.ca),
    ).as_dict()  # fmt: skip
    assert text["registry"]["cert"] == str(secured.files.ca)  # type: ignore[index]
    assert text["offline_store"]["scheme"] == "https"  # type: ignore[index]
    outcome = _client_run(secured, tmp_path / "ok", secured.files.ca, "read")
    assert "error" not in outcome, outcome
    result = outcome["result"]
    direct = secured.stack.store()
    assert result["feature_views"] == sorted(v.name for v in direct.list_feature_views())
    assert (tmp_path / "ok" / "training.parquet").is_file()
    row = _client_row(secured)
    served = secured.server.online_features(
        {k: [v] for k, v in row.items()}, feature_service=FEATURE_SERVICE
    )
    names = served["metadata"]["feature_names"]
    for name, column in zip(names, served["results"], strict=True):
        if name in result["online"]:
            assert result["online"][name] == column["values"], name


def test_a_thin_client_trusting_another_ca_is_refused(secured: Tls, tmp_path: Path) -> None:
    outcome = _client_run(secured, tmp_path / "other", secured.files.other_ca, "list")
    assert "error" in outcome, outcome


# --- the stores: TLS only, verified ------------------------------------------------------


def test_redis_refuses_plaintext_and_another_ca(secured: Tls) -> None:
    port = int(secured.stack.overrides["REDIS_PORT"])
    ok = redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(secured.files.ca))
    assert ok.dbsize() > 0  # the materialized rows, written over TLS
    for client in (
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=3),
        redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(secured.files.other_ca)
        ),
    ):
        with pytest.raises(redis.ConnectionError):
            client.ping()


def test_postgres_refuses_plaintext_and_another_ca(secured: Tls) -> None:
    port = secured.stack.overrides["POSTGRES_PORT"]
    common = {"host": "127.0.0.1", "port": port, "user": "postgres", "dbname": "postgres",
              "connect_timeout": 3}  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects"):
        psycopg.connect(**common, sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(**common, sslmode="verify-full", sslrootcert=str(secured.files.other_ca))


def test_the_platform_config_verifies_postgres_with_its_ca_setting(secured: Tls) -> None:
    """Feast's registry and offline store read POSTGRES_SSLROOTCERT: another CA fails."""
    stack = Stack(
        "dev", {**secured.stack.overrides, "POSTGRES_SSLROOTCERT": str(secured.files.other_ca)}
    )
    with pytest.raises(Exception, match="certificate verify failed"):
        stack.store().list_feature_views()
    settings = secured.stack.settings()
    conninfo = offline_tables.postgres_conninfo(settings, settings["OFFLINE_DB"])
    with psycopg.connect(conninfo, sslrootcert=str(secured.files.ca)) as conn:
        assert conn.pgconn.ssl_in_use


# --- settings ---------------------------------------------------------------------------


def test_tls_settings_need_both_files(tmp_path: Path, secured: Tls) -> None:
    assert tls.server_tls({}) is None
    with pytest.raises(ConfigError, match="TLS_KEY_FILE is empty"):
        tls.server_tls({"TLS_CERT_FILE": str(secured.files.cert)})
    with pytest.raises(ConfigError, match="not a readable file"):
        tls.server_tls({"TLS_CERT_FILE": str(tmp_path / "none.pem"), "TLS_KEY_FILE": "x"})
    other = make_tls_files(tmp_path / "other")
    with pytest.raises(ConfigError, match="do not make a usable pair"):
        tls.server_tls({"TLS_CERT_FILE": str(secured.files.cert), "TLS_KEY_FILE": str(other.key)})
    with pytest.raises(ConfigError, match="TLS_CA_FILE"):
        tls.ca_file({"TLS_CA_FILE": str(tmp_path / "missing.pem")})
    assert tls.requests_verify({}) is True


def test_a_server_with_a_missing_key_does_not_start(secured: Tls, tmp_path: Path) -> None:
    env = {**os.environ, **secured.stack.overrides, "TLS_KEY_FILE": str(tmp_path / "gone.key")}
    done = subprocess.run(
        [sys.executable, "-m", "feature_platform", "serve-offline", "dev",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "TLS_KEY_FILE" in done.stderr
    assert "-----BEGIN" not in done.stderr
