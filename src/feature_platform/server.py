"""Run a feature server for an environment on loopback, and talk to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

import requests

from feature_platform import feast_commands, tls


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
                raise RuntimeError(f"feature server exited with code {self.process.returncode}")
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


def online_request(
    entities: Mapping[str, Sequence[Any]],
    feature_service: str | None = None,
    features: Sequence[str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"entities": {k: list(v) for k, v in entities.items()}}
    if feature_service:
        body["feature_service"] = feature_service
    else:
        body["features"] = list(features or [])
    return body


def response_rows(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The feature server's column-wise answer as one dict per entity row."""
    names = response["metadata"]["feature_names"]
    columns = response["results"]
    n_rows = len(columns[0]["values"]) if columns else 0
    return [
        {name: col["values"][i] for name, col in zip(names, columns, strict=True)}
        for i in range(n_rows)
    ]
