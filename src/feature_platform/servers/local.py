"""Run the registry or offline server for an environment on loopback, and probe it."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import IO

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from feature_platform import feast_commands, tls
from feature_platform.server import free_port


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
                raise RuntimeError(f"{self.kind} server exited with code {self.process.returncode}")
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
