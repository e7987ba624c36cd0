"""Run the platform's servers for an environment on loopback, and probe them: the feature
server, and the registry or offline server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feature_platform.config import feast_commands, tls
from feature_platform.serving.client import online_request


def exited(what: str, process: subprocess.Popen[bytes], log: IO[bytes] | None) -> RuntimeError:
    """The error for a server that stopped before it was ready, with the end of its log
    when it writes to a file: a failed start is then explained where it is reported."""
    message = f"{what} exited with code {process.returncode}"
    name = getattr(log, "name", None)
    if log is not None and isinstance(name, str):
        log.flush()
        lines = Path(name).read_bytes().decode(errors="replace").splitlines()[-20:]
        if lines:
            message += "; the end of its log:\n" + "\n".join(lines)
    return RuntimeError(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class FeatureServer:
    """A feature server process on loopback, stopped on exit from the `with` block.

    By default the platform's server (`feature-platform serve`); `stock=True` runs
    Feast's own `feast serve` at its defaults, the baseline benchmarks compare with.
    """

    def __init__(
        self,
        env: str,
        port: int | None = None,
        workers: int = 1,
        log: IO[bytes] | None = None,
        stock: bool = False,
        settings: Mapping[str, str] | None = None,
        max_requests: int | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.env = env
        self.log = log
        self.port = port or free_port()
        self.workers = workers
        self.stock = stock
        self.settings = dict(settings or {})
        # stock only: Feast's worker recycling (its default: every 1000 requests)
        self.max_requests = max_requests
        # the CPUs the server may use; its workers inherit them
        self.cpus = cpus
        self.url = f"http://127.0.0.1:{self.port}"
        # requests' `verify`: the CA file when the server speaks TLS (set at launch)
        self.verify: str | bool = True
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> FeatureServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> FeatureServer:
        """Launch, then wait until the server answers."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> FeatureServer:
        """Start the process with this process's environment as it is now; do not wait."""
        if self.stock:
            args = ["serve", "--host", "127.0.0.1", "--port", str(self.port),
                    "--workers", str(self.workers), "--no-access-log"]  # fmt: skip
            if self.max_requests is not None:
                args += ["--max-requests", str(self.max_requests)]
            self.process = feast_commands.start(
                self.env, args, stdout=self.log, stderr=self.log, preexec_fn=self._pin
            )
        else:
            env = {
                **feast_commands.prepare(self.env),
                "FEATURE_SERVER_HOST": "127.0.0.1",
                "FEATURE_SERVER_PORT": str(self.port),
                "FEATURE_SERVER_WORKERS": str(self.workers),
                **self.settings,
            }
            # TLS_CERT_FILE/TLS_KEY_FILE set: the server speaks HTTPS only, and this
            # client checks it against TLS_CA_FILE (127.0.0.1 must be in the certificate).
            if tls.server_tls(env) is not None:
                self.url = f"https://127.0.0.1:{self.port}"
                self.verify = tls.requests_verify(env)
            self.process = subprocess.Popen(
                [sys.executable, "-m", "feature_platform", "serve", self.env],
                env=env, stdout=self.log, stderr=self.log, preexec_fn=self._pin,
            )  # fmt: skip
        return self

    def _pin(self) -> None:
        if self.cpus:
            os.sched_setaffinity(0, self.cpus)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise exited("feature server", self.process, self.log)
            try:
                probe = "/health" if self.stock else "/ready"
                reply = requests.get(f"{self.url}{probe}", timeout=1, verify=self.verify)
                if reply.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"feature server not healthy after {timeout_s:.0f}s at {self.url}")

    def online_features(
        self,
        entities: Mapping[str, Sequence[Any]],
        feature_service: str | None = None,
        features: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        body = online_request(entities, feature_service, features)
        response = requests.post(
            f"{self.url}/get-online-features", json=body, timeout=10, verify=self.verify
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def push(
        self,
        push_source: str,
        rows: Mapping[str, Sequence[Any]],
        token: str | None = None,
        to: str = "online",
    ) -> None:
        """POST /push; `to`: online, offline or online_and_offline."""
        body = {"push_source_name": push_source, "df": rows, "to": to}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = requests.post(
            f"{self.url}/push", json=body, headers=headers, timeout=10, verify=self.verify
        )
        response.raise_for_status()


def grpc_channel(address: str, ca_file: str | None = None) -> grpc.Channel:
    """Plaintext, or TLS verified against `ca_file` when given."""
    if ca_file is None:
        return grpc.insecure_channel(address)
    with open(ca_file, "rb") as ca:
        return grpc.secure_channel(address, grpc.ssl_channel_credentials(ca.read()))


def grpc_health(address: str, timeout_s: float = 2, ca_file: str | None = None) -> str:
    """The gRPC health service's answer for the whole server (SERVING, NOT_SERVING, ...)."""
    with grpc_channel(address, ca_file) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def flight_answers(address: str, timeout_s: float = 2, ca_file: str | None = None) -> bool:
    """True when an Arrow Flight server answers a call at `address` (host:port), over
    TLS verified against `ca_file` when given."""
    import pyarrow.flight as fl

    if ca_file is None:
        client = fl.FlightClient(f"grpc+tcp://{address}")
    else:
        with open(ca_file, "rb") as ca:
            client = fl.FlightClient(f"grpc+tls://{address}", tls_root_certs=ca.read())
    try:
        list(client.list_flights(options=fl.FlightCallOptions(timeout=timeout_s)))
        return True
    except fl.FlightUnauthenticatedError:
        # with identities on, a call without a token is refused: the server is up
        return True
    except fl.FlightError:
        return False
    finally:
        client.close()


class PlatformServer:
    """`feature-platform serve-registry|serve-offline ENV` on loopback, stopped on exit."""

    def __init__(self, env: str, kind: str, log: IO[bytes] | None = None) -> None:
        if kind not in ("registry", "offline"):
            raise ValueError(f"unknown server kind {kind!r}")
        self.env = env
        self.kind = kind
        self.log = log
        self.port = free_port()
        self.rest_port = free_port() if kind == "registry" else None
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        # The CA readiness checks verify against, when the server speaks TLS (at launch).
        self.ca_file: str | None = None

    def __enter__(self) -> PlatformServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "feature_platform", f"serve-{self.kind}", self.env,
                "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        if self.rest_port is not None:
            argv += ["--rest-port", str(self.rest_port)]
        return argv

    def start(self) -> PlatformServer:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> PlatformServer:
        """Start the process without waiting for it (several servers boot at once)."""
        env = feast_commands.prepare(self.env)
        if tls.server_tls(env) is not None:
            self.ca_file = tls.ca_file(env) or tls.system_ca_file()
        self.process = subprocess.Popen(self.argv(), env=env, stdout=self.log, stderr=self.log)
        return self

    def ready(self) -> bool:
        try:
            if self.kind == "registry":
                return grpc_health(self.address, timeout_s=1, ca_file=self.ca_file) == "SERVING"
            return flight_answers(self.address, timeout_s=1, ca_file=self.ca_file)
        except grpc.RpcError:
            return False

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise exited(f"{self.kind} server", self.process, self.log)
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"{self.kind} server not ready after {timeout_s:.0f}s at {self.address}")

    def stop(self, timeout_s: float = 30) -> int | None:
        """SIGTERM, as the kubelet sends it; the exit code, or None if it had to be killed."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return None
        return self.process.returncode
