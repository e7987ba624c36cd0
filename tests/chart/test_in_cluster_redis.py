"""The in-cluster Redis's rendered command, run as a local redis-server: it never evicts,
it refuses writes at its maxmemory, and a killed server comes back with every write from
its append-only file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
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


def _command(tmp_path: Path, port: int) -> str:
    """The container's shell command, its /tmp, /data and port made local."""
    objects = render(SCENARIOS["dev"], {"redis": {"inCluster": {"maxMemory": "2mb"}}})
    pod = pod_template(one(objects, "StatefulSet", "-redis"))
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["sh", "-c"]
    (script,) = container["args"]
    # Said explicitly: an image or config file with another default changes nothing.
    assert "--maxmemory-policy noeviction" in script
    (tmp_path / "data").mkdir(exist_ok=True)
    for old, new, times in [
        ("/tmp/redis.conf", f"{tmp_path}/redis.conf", 2),  # written, then read
        ("--dir /data", f"--dir {tmp_path / 'data'}", 1),
        ("--port 6379", f"--port {port} --bind 127.0.0.1", 1),
    ]:
        assert script.count(old) == times, (old, script)
        script = script.replace(old, new)
    return str(script)


class _Server:
    def __init__(self, command: str, port: int) -> None:
        self.command = command
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> redis.Redis:
        self.process = subprocess.Popen(
            ["sh", "-c", self.command], env={"REDIS_PASSWORD": "pw", "PATH": os.environ["PATH"]}
        )
        client = redis.Redis(port=self.port, password="pw", socket_timeout=5)
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
    started = _Server(_command(tmp_path, port), port)
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
