"""Throwaway TLS for tests: a test CA (trustme), a Redis and a PostgreSQL that speak TLS only.

Each server runs from a temporary directory on a free loopback port and is stopped by
its context manager; nothing touches the machine's own Redis or PostgreSQL.
"""

from __future__ import annotations

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
from postgres_cluster import free_port, postgres_cluster

# The names clients use for the test servers: the certificates must cover both.
HOSTS = ("127.0.0.1", "localhost")


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


@contextmanager
def tls_postgres(files: TlsFiles) -> Iterator[int]:
    """A PostgreSQL cluster that accepts TLS connections only (trust auth, user
    `postgres`), with the test certificate; yields its port."""
    hba = (
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all 0.0.0.0/0 reject\n"
    )
    with postgres_cluster(
        hba, "-c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key",
        {"server.pem": files.cert, "server.key": files.key},
    ) as cluster:  # fmt: skip
        yield cluster.port


def create_databases(port: int, ca: Path, names: list[str]) -> None:
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres",
        sslmode="verify-full", sslrootcert=str(ca), autocommit=True,
    ) as conn:  # fmt: skip
        for name in names:
            conn.execute(f'CREATE DATABASE "{name}"')
