"""A throwaway PostgreSQL cluster for tests that need settings the machine's own server does
not have (TLS only, password authentication): its own directory, a free loopback port,
stopped and removed by its context manager."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    port: int
    work: Path  # its directory: data/ (with the files given), run/, the server's log
    socket_dir: Path  # the superuser `postgres` connects here without a password


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no /usr/lib/postgresql/*/bin/{name}")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def postgres_cluster(
    hba: str, options: str = "", files: Mapping[str, Path] | None = None
) -> Iterator[Cluster]:
    """A cluster with `hba` as its pg_hba.conf and `options` (`-c name=value ...`) as its
    settings; `files` copied into its data directory under their names (so `options` names
    them as they are), readable by the server only (a key it must not refuse)."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="test-postgres-"))
    data, run = work / "data", work / "run"
    run.mkdir()
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    for path in (work, run):
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    initdb = [_pg_bin("initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
              "--no-sync", "-E", "UTF8"]  # fmt: skip
    subprocess.run(_as_postgres(initdb), check=True, capture_output=True)
    (data / "pg_hba.conf").write_text(hba)
    for name, source in (files or {}).items():
        shutil.copy(source, data / name)
        (data / name).chmod(0o600)
        if owner is not None:
            os.chown(data / name, owner.pw_uid, owner.pw_gid)
    settings = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={run} "
        f"-c fsync=off -c max_connections=60 {options}"
    )
    pg_ctl = _pg_bin("pg_ctl")
    start = [pg_ctl, "-D", str(data), "-o", settings, "-l", str(work / "log"), "-w", "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True)
    try:
        yield Cluster(port, work, run)
    finally:
        stop = [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
