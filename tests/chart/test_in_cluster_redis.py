"""The in-cluster Redis's rendered command, run as a local redis-server: it never evicts,
it refuses writes at its maxmemory, a killed server comes back with every write from its
append-only file, and a password rotation (rotate-password, the mounted Secret changed)
keeps its probes passing and leaves only the new password."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from rendering import SCENARIOS, one, pod_template, render

from feature_platform.devtools.launcher import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server not on PATH"
)


SECRET_MOUNT = "/etc/redis-auth"


def _container() -> dict:
    objects = render(SCENARIOS["dev"], {"redis": {"inCluster": {"maxMemory": "2mb"}}})
    pod = pod_template(one(objects, "StatefulSet", "-redis"))
    (container,) = pod["spec"]["containers"]
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == SECRET_MOUNT]
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == mount["name"]]
    # the Secret's key as the file the script and the probes read, updated in place
    assert [item["path"] for item in volume["secret"]["items"]] == ["password"]
    assert "subPath" not in mount
    return dict(container)


def _command(tmp_path: Path, port: int) -> str:
    """The container's shell command, its /tmp, /data, Secret mount and port made local."""
    container = _container()
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    # Said explicitly: an image or config file with another default changes nothing.
    assert "--maxmemory-policy noeviction" in script
    (tmp_path / "data").mkdir(exist_ok=True)
    for old, new, times in [
        ("/tmp/redis.conf", f"{tmp_path}/redis.conf", 2),  # written, then read
        ("--dir /data", f"--dir {tmp_path / 'data'}", 1),
        ("--port 6379", f"--port {port} --bind 127.0.0.1", 1),
        (SECRET_MOUNT, str(tmp_path), 1),
    ]:
        assert script.count(old) == times, (old, script)
        script = script.replace(old, new)
    return str(script)


def _probe(tmp_path: Path, port: int) -> list[str]:
    """The readiness probe (the liveness probe is the same command), made local."""
    container = _container()
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe == container["livenessProbe"]["exec"]["command"]
    return [
        part.replace(SECRET_MOUNT, str(tmp_path)).replace("-h 127.0.0.1", f"-h 127.0.0.1 -p {port}")
        for part in probe
    ]


class _Server:
    def __init__(self, command: str, port: int, password_file: Path) -> None:
        self.command = command
        self.port = port
        self.password_file = password_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, password: str = "pw") -> redis.Redis:
        self.password_file.write_text(password)
        self.process = subprocess.Popen(
            ["sh", "-c", self.command], env={"PATH": os.environ["PATH"]}
        )
        client = redis.Redis(port=self.port, password=password, socket_timeout=5)
        for _ in range(100):
            try:
                if client.ping():
                    return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise AssertionError("the rendered redis-server did not start")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[_Server]:
    port = free_port()
    started = _Server(_command(tmp_path, port), port, tmp_path / "password")
    yield started
    started.kill()


def test_it_refuses_writes_when_full_and_keeps_every_write_across_a_kill(server: _Server) -> None:
    client = server.start()
    memory = client.info("memory")
    assert memory["maxmemory_policy"] == "noeviction"
    assert memory["maxmemory"] == 2 * 1024 * 1024
    assert client.info("persistence")["aof_enabled"] == 1

    written = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while written < 10_000:
            client.set(f"value:{written}", b"x" * 4096)
            written += 1
    assert client.info("stats")["evicted_keys"] == 0
    assert client.dbsize() == written

    server.kill()
    client = server.start()
    assert client.dbsize() == written
    assert client.get("value:0") == b"x" * 4096


def _rotate(port: int, password_file: Path, flag: str, password: str) -> None:
    """`feature-platform rotate-password dev redis FLAG` against this server, as a server
    pod runs it: the settings of the pod, its password file, the password on stdin."""
    env = {
        **os.environ,
        "REDIS_HOST": "127.0.0.1",
        "REDIS_PORT": str(port),
        "REDIS_DB": "0",
        "REDIS_PASSWORD_FILE": str(password_file),
        "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
    }
    argv = [sys.executable, "-m", "feature_platform", "rotate-password", "dev", "redis", flag]
    done = subprocess.run(argv, env=env, input=password + "\n", capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert password not in done.stdout + done.stderr


def _accepts(port: int, password: str) -> bool:
    try:
        return bool(redis.Redis(port=port, password=password, socket_timeout=5).ping())
    except redis.AuthenticationError:
        return False


def test_a_rotation_keeps_the_probes_passing_and_leaves_the_new_password_only(
    server: _Server, tmp_path: Path
) -> None:
    server.start("old-password-1")
    probe = _probe(tmp_path, server.port)

    def probe_passes() -> bool:
        return subprocess.run(probe, env={"PATH": os.environ["PATH"]}).returncode == 0

    assert probe_passes()
    # The runbook's order: the server accepts the new one, then the Secret changes (the
    # kubelet rewrites the mounted file), then the old one goes.
    _rotate(server.port, server.password_file, "--add", "new-password-2")
    assert _accepts(server.port, "old-password-1") and _accepts(server.port, "new-password-2")
    server.password_file.write_text("new-password-2")
    assert probe_passes()
    _rotate(server.port, server.password_file, "--remove", "old-password-1")
    assert not _accepts(server.port, "old-password-1")
    assert _accepts(server.port, "new-password-2") and probe_passes()
    # A restart reads the Secret as it is now.
    server.kill()
    server.start("new-password-2")
    assert not _accepts(server.port, "old-password-1") and probe_passes()
