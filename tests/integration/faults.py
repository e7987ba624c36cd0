"""Dependencies the tests can break: a private Redis, and a TCP proxy that can go down.

Both listen on loopback only, so breaking them never touches the shared services that
other test sessions use.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from feature_platform.devtools.launcher import free_port

if TYPE_CHECKING:
    import pandas as pd
    from stacks import Stack


def eventually(check: Callable[[], bool], what: str, attempts: int = 100) -> None:
    """Until `check()` holds, every 0.1 s, at most `attempts` times (a dependency coming
    back, a cache refreshing)."""
    for _ in range(attempts):
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"never happened: {what}")


def _wait_port(port: int, up: bool, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} did not go {'up' if up else 'down'}")


class PrivateRedis:
    """A redis-server of this test's own, which it may stop, pause and restart."""

    def __init__(self, work_dir: Path, *args: str) -> None:
        """`args`: more redis-server options, such as `--maxmemory 4mb`."""
        self.port = free_port()
        self.work_dir = work_dir
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.work_dir), *self.args],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_port(self.port, up=True)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)
        _wait_port(self.port, up=False)

    def pause(self) -> None:
        """The process stays, the port accepts connections, nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)


@contextlib.contextmanager
def stack_on_private_redis(
    stack_factory: Callable[..., Stack],
    work_dir: Path,
    name: str,
    tables: Mapping[str, pd.DataFrame],
    *redis_args: str,
) -> Iterator[tuple[Stack, PrivateRedis]]:
    """A dev stack on a PrivateRedis of its own (started with `redis_args`), `tables`
    written and applied; on exit the stack is closed while its Redis still runs, then the
    Redis is stopped."""
    redis = PrivateRedis(work_dir, *redis_args)
    redis.start()
    stack = stack_factory("dev", name, {"REDIS_PORT": str(redis.port)})
    try:
        stack.write(tables)
        stack.feast("apply")
        yield stack, redis
    finally:
        stack.close()
        redis.stop()


class Proxy:
    """Forwards a loopback port to a target port until taken down."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        _wait_port(self.port, up=True)

    def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
