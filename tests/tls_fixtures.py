"""Throwaway TLS for tests: a test CA (trustme), a Redis and a PostgreSQL that speak TLS only.

Each server runs from a temporary directory on a free loopback port and is stopped by
its context manager; nothing touches the machine's own Redis or PostgreSQL.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import trustme

# The names clients use for the test servers: the certificates must cover both.
HOSTS = ("127.0.0.1", "localhost")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class TlsFiles:
    """A server certificate from a test CA, and a second CA that did not sign it."""

    ca: Path  # the CA that signed the server certificate
    cert: Path  # the server's chain, leaf first
    key: Path
    other_ca: Path  # a CA clients may wrongly trust

    def server_env(self) -> dict[str, str]:
        return {"TLS_CERT_FILE": str(self.cert), "TLS_KEY_FILE": str(self.key)}


def make_tls_files(directory: Path) -> TlsFiles:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    leaf = ca.issue_cert(*HOSTS)
    files = TlsFiles(
        ca=directory / "ca.pem",
        cert=directory / "server.pem",
        key=directory / "server.key",
        other_ca=directory / "other-ca.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    leaf.private_key_pem.write_to_path(str(files.key))
    with files.cert.open("wb") as chain:
        for blob in leaf.cert_chain_pems:
            chain.write(blob.bytes())
    trustme.CA().cert_pem.write_to_path(str(files.other_ca))
    files.key.chmod(0o600)
    return files


def _wait_for_port(port: int, process: subprocess.Popen[bytes] | None, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{what} is not listening on {port}")


@contextmanager
def tls_redis(files: TlsFiles) -> Iterator[int]:
    """redis-server listening on TLS only (no plaintext port); yields the port. Clients
    need no certificate of their own."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="tls-redis-"))
    argv = ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
            "--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key),
            "--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "no",
            "--save", "", "--appendonly", "no", "--dir", str(work)]  # fmt: skip
    log = (work / "redis.log").open("wb")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, "redis-server")
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no /usr/lib/postgresql/*/bin/{name}")
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user then."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


@contextmanager
def tls_postgres(files: TlsFiles) -> Iterator[int]:
    """A PostgreSQL cluster that accepts TLS connections only (trust auth, user
    `postgres`), with the test certificate; yields its port."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="tls-postgres-"))
    data, run = work / "data", work / "run"
    run.mkdir()
    # The server reads its key as its own user, and only a key no one else may read.
    shutil.copy(files.cert, work / "server.pem")
    shutil.copy(files.key, work / "server.key")
    (work / "server.key").chmod(0o600)
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        for path in (work, run, work / "server.pem", work / "server.key"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    subprocess.run(
        _as_postgres(
            [
                _pg_bin("initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
            ]
        ),
        check=True,
        capture_output=True,
    )
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    options = (
        f"-c port={port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={run} "
        f"-c ssl=on -c ssl_cert_file={work / 'server.pem'} -c ssl_key_file={work / 'server.key'} "
        "-c fsync=off -c max_connections=60"
    )
    pg_ctl = _pg_bin("pg_ctl")
    subprocess.run(
        _as_postgres(
            [pg_ctl, "-D", str(data), "-o", options, "-l", str(work / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield port
    finally:
        subprocess.run(
            _as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
            capture_output=True,
        )
        shutil.rmtree(work, ignore_errors=True)


def create_databases(port: int, ca: Path, names: list[str]) -> None:
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres",
        sslmode="verify-full", sslrootcert=str(ca), autocommit=True,
    ) as conn:  # fmt: skip
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
