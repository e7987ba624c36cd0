"""A kind cluster with the chart installed, driven through docker, kind, helm and kubectl."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))

from rendering import CHART, ci_load_steps, platform_job  # noqa: E402

CLUSTER = "feast-platform"
NAMESPACE = "feast-dev"
RELEASE = "fp"
IMAGE = "feature-platform:kind"
TOOLS = ("docker", "kind", "helm", "kubectl")
# The sample data the CI-style job loads: small, so a 2-core runner applies it quickly.
SAMPLE = ["--customers", "200", "--merchants", "20", "--days", "10", "--transactions", "1000"]


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sh(*argv: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = 900):
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


@dataclass
class Cluster:
    """kubectl and helm bound to one kind cluster's kubeconfig and the release namespace."""

    name: str
    kubeconfig: Path
    created: bool
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "-n", NAMESPACE, *args]
        return str(sh(*argv, check=check, timeout=timeout).stdout)

    def helm(self, *args: str, check: bool = True, timeout: float = 900) -> str:
        argv = ["helm", "--kubeconfig", str(self.kubeconfig), "-n", NAMESPACE, *args]
        return str(sh(*argv, check=check, timeout=timeout).stdout)

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return dict(json.loads(self.kubectl("get", kind, name, "-o", "json")))

    def apply(self, obj: dict[str, Any]) -> None:
        manifest = json.dumps(obj)
        argv = ["kubectl", "--kubeconfig", str(self.kubeconfig), "apply", "-f", "-"]
        done = subprocess.run(argv, input=manifest, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"kubectl apply failed: {done.stderr[-4000:]}")

    def wait_job(self, name: str, timeout_s: int = 900) -> None:
        """Until the Job completes; its logs in the error if it fails."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.get("job", name).get("status", {})
            if status.get("succeeded"):
                return
            if status.get("failed"):
                logs = self.kubectl("logs", f"job/{name}", "--all-containers", check=False)
                raise RuntimeError(f"job {name} failed:\n{logs[-4000:]}")
            time.sleep(3)
        raise TimeoutError(f"job {name} not complete after {timeout_s}s")

    def diagnostics(self) -> str:
        """Events, descriptions and logs of the namespace: what a failure needs."""
        parts = []
        for args in (
            ("get", "all,pvc,networkpolicy", "-o", "wide"),
            ("get", "events", "--sort-by=.lastTimestamp"),
            ("describe", "pods"),
            (
                "logs",
                "-l",
                f"app.kubernetes.io/instance={RELEASE}",
                "--all-containers",
                "--prefix",
                "--tail=200",
                "--max-log-requests=20",
            ),
        ):
            parts.append(f"$ kubectl {' '.join(args)}\n{self.kubectl(*args, check=False)}")
        return "\n".join(parts)


def cluster_up(keep: bool, workdir: Path) -> Cluster:
    """The kind cluster: reused when it exists, else created from k8s/kind-cluster.yaml."""
    existing = sh("kind", "get", "clusters").stdout.split()
    created = CLUSTER not in existing
    if created:
        sh(
            "kind",
            "create",
            "cluster",
            "--name",
            CLUSTER,
            "--config",
            str(ROOT / "k8s" / "kind-cluster.yaml"),
            "--wait",
            "180s",
        )
    kubeconfig = workdir / "kubeconfig"
    kubeconfig.write_text(sh("kind", "get", "kubeconfig", "--name", CLUSTER).stdout)
    cluster = Cluster(CLUSTER, kubeconfig, created and not keep)
    sh(
        "kubectl",
        "--kubeconfig",
        str(kubeconfig),
        "apply",
        "-f",
        str(ROOT / "k8s" / "namespaces.yaml"),
    )
    return cluster


def build_and_load_image(cluster: Cluster) -> None:
    sh("docker", "build", "-t", IMAGE, str(ROOT), timeout=1800)
    sh("kind", "load", "docker-image", IMAGE, "--name", cluster.name, timeout=900)


def helm_values_args(*extra: str) -> list[str]:
    # The schedule is suspended: the test runs the CronJob once, by hand, like NOTES.txt.
    return [
        "-f",
        str(CHART / "values-dev.yaml"),
        "--set",
        "image.tag=kind",
        "--set",
        "materialize.suspend=true",
        *extra,
    ]


def install(cluster: Cluster) -> None:
    """Install the chart with dev values, load sample data and apply (as CI would, in a Job
    from the image), run the CronJob once, and wait for the server's rollout."""
    full = f"{RELEASE}-feast-platform"
    cluster.helm("upgrade", "--install", RELEASE, str(CHART), *helm_values_args())
    for store in ("postgres", "redis"):
        cluster.kubectl("rollout", "status", f"statefulset/{full}-{store}", "--timeout=300s")
    deployment = cluster.get("deployment", f"{full}-server")
    stamp = str(int(time.time()))
    for name, args in ci_load_steps("dev", SAMPLE):
        job = platform_job(deployment, f"{name}-{stamp}", args)
        cluster.apply(job)
        cluster.wait_job(job["metadata"]["name"])
    manual = f"{full}-materialize-manual-{stamp}"
    cluster.kubectl("create", "job", f"--from=cronjob/{full}-materialize", manual)
    cluster.wait_job(manual)
    cluster.kubectl("rollout", "status", f"deployment/{full}-server", "--timeout=600s")


class PortForward:
    """`kubectl port-forward` to a Service, stopped on close."""

    def __init__(self, cluster: Cluster, service: str, remote_port: int) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                "kubectl",
                "--kubeconfig",
                str(cluster.kubeconfig),
                "-n",
                NAMESPACE,
                "port-forward",
                f"svc/{service}",
                f"{self.port}:{remote_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_http(self, path: str = "/health", timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"port-forward exited: {self.process.stderr}")
            try:
                if requests.get(self.url + path, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.url}{path} not answering")

    def wait_tcp(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"port-forward to {self.port} not listening")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
