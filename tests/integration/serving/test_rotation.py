"""Rotation with zero failed requests: each secret the feature server uses, rotated while
requests run, in the order docs/runbooks/rotating-credentials.md gives.

One dev stack on a PostgreSQL of its own that checks passwords (scram-sha-256 over TCP;
the machine's own server trusts loopback), a Redis ACL user of its own on the local Redis,
and a feature server over TLS whose secrets are files of directories kept as the kubelet
keeps a mounted Secret: each key a link into `..data`, which one rename swaps when the
Secret changes. While a bounded load runs (reads; pushes too for the write token), a test
rotates one secret; then every request sent was answered 200, the old credential is
refused, and the new one is what the server uses. Each test prints its counts (`-s`).
"""

from __future__ import annotations

import os
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
import redis
import requests
import trustme
from conftest import AS_OF, MAT_END, SEED
from postgres_cluster import Cluster, postgres_cluster
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from stacks import RUN_ID, Stack, make_stack

from feature_platform.config import feast_commands
from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.serving.client import online_request

SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=300)
# Password authentication over TCP; the superuser keeps its socket, without one.
HBA = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
ROLE = "fpt_rotation"
READ = online_request(
    {"customer_id": [1, 2, 3]},
    features=["customer_txn_1h:n_txn_1h", "customer_stats:n_purchases_7d"],
)
LAST_REFRESH = "feature_server_registry_last_refresh_success_timestamp_seconds"


def _new_secret() -> str:
    return secrets.token_urlsafe(24)


class MountedSecret:
    """A directory kept as the kubelet keeps a Secret volume: each key a link to
    `..data/<key>`, `..data` a link to the current version's directory, replaced in one
    rename when the Secret changes."""

    def __init__(self, directory: Path, data: dict[str, bytes]) -> None:
        self.directory = directory
        directory.mkdir(parents=True)
        self.version = 0
        self.write(data)

    def path(self, key: str) -> Path:
        return self.directory / key

    def read(self, key: str) -> str:
        return self.path(key).read_text()

    def write(self, data: dict[str, bytes]) -> None:
        self.version += 1
        version = self.directory / f"..{self.version}"
        version.mkdir()
        for key, value in data.items():
            (version / key).write_bytes(value)
        staged = self.directory / "..data_tmp"
        staged.symlink_to(version.name)
        os.replace(staged, self.directory / "..data")
        for key in data:
            if not self.path(key).is_symlink():
                self.path(key).symlink_to(f"..data/{key}")

    def update(self, key: str, value: str) -> None:
        """The Secret with `key` changed, its other keys as they are."""
        keys = [p.name for p in (self.directory / "..data").iterdir()]
        data = {k: self.path(k).read_bytes() for k in keys}
        self.write({**data, key: value.encode()})


def _pair(ca: trustme.CA) -> tuple[dict[str, bytes], bytes]:
    """A kubernetes.io/tls Secret's keys for a new certificate of `ca`, and the
    certificate's DER."""
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    der = ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())
    return {"tls.crt": chain, "tls.key": leaf.private_key_pem.bytes()}, der


def _write_atomically(path: Path, data: bytes) -> None:
    staged = path.with_suffix(".tmp")
    staged.write_bytes(data)
    os.replace(staged, path)


class Load:
    """`send(session)` called in a loop from `threads` threads (a session each) until the
    block ends, at most `limit` times in all and for at most `max_s` seconds; every call
    counted, each exception or status other than 200 kept as a failure."""

    def __init__(
        self,
        send: Callable[[requests.Session], int],
        threads: int = 2,
        limit: int = 50_000,
        max_s: float = 300,
    ) -> None:
        self.send = send
        self.limit = limit
        self.ends = time.monotonic() + max_s
        self.sent = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < self.ends:
                with self._lock:
                    if self.sent >= self.limit:
                        return
                    self.sent += 1
                try:
                    status = self.send(session)
                    failure = None if status == 200 else f"status {status}"
                except requests.RequestException as exc:
                    failure = f"{type(exc).__name__}: {exc}"
                if failure is not None:
                    with self._lock:
                        self.failures.append(failure)

    def more(self, n: int = 100) -> None:
        """Wait until `n` more requests were sent: requests ran across the step before."""
        target = self.sent + n
        while self.sent < target:
            assert any(t.is_alive() for t in self._threads), "the load ended early"
            time.sleep(0.01)

    def report(self, secret: str) -> None:
        print(f"\nrotation of the {secret}: {self.sent} requests sent, {len(self.failures)} failed")


@dataclass
class Rotating:
    stack: Stack
    server: FeatureServer
    cluster: Cluster
    credentials: MountedSecret  # postgres-password, redis-password, write-token
    certificate: MountedSecret  # tls.crt, tls.key
    trust: Path  # the CA bundle clients verify the server against
    ca: trustme.CA
    redis_user: str
    # the server's environment: where `feature-platform rotate-password` runs
    env: dict[str, str]

    def reader(self, new_connections: bool = False) -> Callable[[requests.Session], int]:
        headers = {"Connection": "close"} if new_connections else {}
        url = f"{self.server.url}/get-online-features"

        def send(session: requests.Session) -> int:
            response = session.post(
                url, json=READ, headers=headers, timeout=10, verify=str(self.trust)
            )
            return response.status_code

        return send

    def push(self, session: requests.Session, token: str, customer: int = 7) -> int:
        rows = {
            "customer_id": [customer],
            "event_timestamp": [datetime.now(UTC).isoformat()],
            "n_txn_1h": [1],
            "sum_amount_1h": [10.5],
        }
        response = session.post(
            f"{self.server.url}/push",
            json={"push_source_name": "customer_txn_1h_push", "df": rows, "to": "online"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
            verify=str(self.trust),
        )
        return response.status_code

    def rotate_password(self, store: str, flag: str, password: str) -> None:
        """`feature-platform rotate-password dev STORE FLAG`, as a server pod runs it."""
        argv = [sys.executable, "-m", "feature_platform", "rotate-password", "dev", store, flag]
        done = subprocess.run(
            argv, env=self.env, input=f"{password}\n", capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert password not in done.stdout + done.stderr

    def metric(self, name: str) -> float:
        text = requests.get(f"{self.server.url}/metrics", timeout=10, verify=str(self.trust)).text
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
        (value,) = [s.value for s in samples if s.name == name]
        return float(value)

    def superuser(self) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.cluster.socket_dir), port=self.cluster.port, user="postgres",
            dbname="postgres", autocommit=True,
        )  # fmt: skip


def _postgres_accepts(cluster: Cluster, password: str) -> bool:
    try:
        with psycopg.connect(
            host="127.0.0.1", port=cluster.port, user=ROLE, password=password,
            dbname="postgres", connect_timeout=5,
        ):  # fmt: skip
            return True
    except psycopg.OperationalError as exc:
        assert "password authentication failed" in str(exc), exc
        return False


def _redis_accepts(user: str, password: str) -> bool:
    try:
        return bool(redis.Redis(username=user, password=password, socket_timeout=5).ping())
    except redis.AuthenticationError:
        return False


@pytest.fixture(scope="module")
def rotating(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rotating]:
    base = tmp_path_factory.mktemp("rotation")
    keys = ("postgres-password", "redis-password", "write-token")
    credentials = MountedSecret(base / "credentials", {k: _new_secret().encode() for k in keys})
    ca = trustme.CA()
    certificate = MountedSecret(base / "tls", _pair(ca)[0])
    trust = base / "trust.pem"
    _write_atomically(trust, ca.cert_pem.bytes())
    user = f"fpt_rotation_{RUN_ID}"
    admin = redis.Redis()
    admin.acl_setuser(
        user, enabled=True, passwords=[f"+{credentials.read('redis-password')}"],
        keys=["~*"], channels=["&*"], commands=["+@all"],
    )  # fmt: skip
    try:
        with postgres_cluster(HBA) as cluster:
            with psycopg.connect(
                host=str(cluster.socket_dir), port=cluster.port, user="postgres",
                dbname="postgres", autocommit=True,
            ) as conn:  # fmt: skip
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                        sql.Identifier(ROLE), sql.Literal(credentials.read("postgres-password"))
                    )
                )
            stack = make_stack(
                "dev",
                "rotation",
                base / "stack",
                {
                    "POSTGRES_PORT": str(cluster.port),
                    "POSTGRES_USER": ROLE,
                    "POSTGRES_PASSWORD_FILE": str(credentials.path("postgres-password")),
                },
            )
            # After the stack claimed its Redis db as the default user: the platform is the
            # ACL user from here on.
            stack.overrides.update(
                {
                    "REDIS_USERNAME": user,
                    "REDIS_PASSWORD_FILE": str(credentials.path("redis-password")),
                }
            )
            try:
                stack.write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
                stack.feast("apply")
                store = stack.store()
                for view in store.list_feature_views():
                    store.materialize(MAT_END - view.ttl, MAT_END, feature_views=[view.name])
                settings = {
                    "FEATURE_SERVER_WRITE_MODE": "token",
                    "FEATURE_SERVER_WRITE_TOKEN_FILE": str(credentials.path("write-token")),
                    # the registry read from PostgreSQL every second
                    "FEATURE_SERVER_REGISTRY_TTL_SECONDS": "1",
                    "FEATURE_SERVER_DRAIN_SECONDS": "0",
                    "TLS_CERT_FILE": str(certificate.path("tls.crt")),
                    "TLS_KEY_FILE": str(certificate.path("tls.key")),
                    "TLS_CA_FILE": str(trust),
                }
                log = (base / "server.log").open("wb")
                server = stack.server(settings=settings, log=log)
                with stack.active():
                    env = {**feast_commands.prepare("dev"), **settings}
                yield Rotating(
                    stack, server, cluster, credentials, certificate, trust, ca, user, env
                )
                log.close()
                # Nothing the server logged carries a secret.
                logged = (base / "server.log").read_text()
                for directory in (credentials.directory,):
                    for version in directory.glob("..[0-9]*"):
                        for file in version.iterdir():
                            for value in file.read_text().splitlines():
                                assert value not in logged, file.name
            finally:
                stack.close()
    finally:
        admin.acl_deluser(user)


def test_the_redis_password_rotates_with_both_accepted_meanwhile(rotating: Rotating) -> None:
    r = rotating
    old, new = r.credentials.read("redis-password"), _new_secret()
    with Load(r.reader()) as load:
        load.more()
        r.rotate_password("redis", "--add", new)  # 1. the user accepts both
        load.more()
        r.credentials.update("redis-password", new)  # 2. the Secret changes
        load.more()
        r.rotate_password("redis", "--remove", old)  # 3. the old one goes
        load.more()
    load.report("Redis password")
    assert load.failures == [] and load.sent > 0
    assert not _redis_accepts(r.redis_user, old)
    assert _redis_accepts(r.redis_user, new)
    # What the server connects with now: its connections dropped, it opens new ones, which
    # only the new password can open.
    admin = redis.Redis()
    killed = admin.client_kill_filter(user=r.redis_user)
    assert killed >= 1
    with Load(r.reader()) as after:
        after.more(100)
    after.report("Redis password, after its connections were dropped")
    assert after.failures == []
    assert any(c["user"] == r.redis_user for c in admin.client_list())


def test_the_postgres_password_rotates_and_the_server_reconnects_with_the_new_one(
    rotating: Rotating,
) -> None:
    r = rotating
    old, new = r.credentials.read("postgres-password"), _new_secret()
    with Load(r.reader()) as load:
        load.more()
        r.rotate_password("postgres", "--set", new)  # 1. the role's password changes
        load.more()
        r.credentials.update("postgres-password", new)  # 2. the Secret follows
        load.more()
        # The server's connections, opened with the old password, end: its next registry
        # refresh opens one, which only the new password can open.
        with r.superuser() as admin:
            ended = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE usename = %s AND pid <> pg_backend_pid()",
                (ROLE,),
            ).fetchone()
        assert ended is not None and ended[0] >= 1
        ended_at = time.time()
        deadline = time.monotonic() + 120
        while r.metric(LAST_REFRESH) <= ended_at:
            assert time.monotonic() < deadline, "no registry refresh after the reconnection"
            time.sleep(0.2)
        load.more()
    load.report("PostgreSQL password")
    assert load.failures == [] and load.sent > 0
    assert not _postgres_accepts(r.cluster, old)
    assert _postgres_accepts(r.cluster, new)
    with r.superuser() as admin:
        # the refresh's connection: the server's, opened with the new password
        rows = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (ROLE,)
        ).fetchone()
    assert rows is not None and rows[0] >= 1


def test_the_write_token_rotates_with_both_accepted_meanwhile(rotating: Rotating) -> None:
    r = rotating
    old, new = r.credentials.read("write-token").splitlines()[0], _new_secret()
    token = {"value": old}
    read = r.reader()
    turn = threading.local()

    def read_or_push(session: requests.Session) -> int:
        turn.push = not getattr(turn, "push", False)
        return r.push(session, token["value"]) if turn.push else read(session)

    with Load(read_or_push) as load:
        load.more()
        r.credentials.update("write-token", f"{old}\n{new}")  # 1. the server accepts both
        load.more()
        token["value"] = new  # 2. the writers move to the new one
        load.more()
        r.credentials.update("write-token", new)  # 3. the old one goes
        load.more()
    load.report("write token")
    assert load.failures == [] and load.sent > 0
    with requests.Session() as session:
        assert r.push(session, old) == 401
        assert r.push(session, new) == 200


def test_the_tls_certificate_rotates_to_another_ca_without_a_failed_handshake(
    rotating: Rotating,
) -> None:
    r = rotating
    old_ca, new_ca = r.ca, trustme.CA()
    new_pair, new_der = _pair(new_ca)
    # a new connection, and so a handshake, for every request
    with Load(r.reader(new_connections=True)) as load:
        load.more()
        # 1. clients trust the new CA beside the old
        _write_atomically(r.trust, old_ca.cert_pem.bytes() + new_ca.cert_pem.bytes())
        load.more()
        r.certificate.write(new_pair)  # 2. the Secret changes
        load.more()
        _write_atomically(r.trust, new_ca.cert_pem.bytes())  # 3. the old CA goes
        load.more()
    r.ca = new_ca
    load.report("TLS certificate")
    assert load.failures == [] and load.sent > 0
    served = ssl.get_server_certificate(("127.0.0.1", r.server.port))
    assert ssl.PEM_cert_to_DER_cert(served) == new_der
    old_trust = r.trust.with_name("old-ca.pem")
    old_trust.write_bytes(old_ca.cert_pem.bytes())
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{r.server.url}/health", timeout=10, verify=str(old_trust))
