"""Isolated copies of an environment for tests: own databases, own Redis db, own files."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import redis
import yaml
from feast import FeatureStore
from psycopg import sql

from feature_platform import training
from feature_platform.config import environments, feast_commands
from feature_platform.devtools.launcher import FeatureServer, PlatformServer
from feature_platform.materialization import load as materialize
from feature_platform.offline import mirror as offline_mirror
from feature_platform.offline import tables as offline_tables

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
# The servers tests start accept writes from callers presenting this token.
WRITE_TOKEN = secrets.token_hex(16)
WRITABLE = {"FEATURE_SERVER_WRITE_MODE": "token", "FEATURE_SERVER_WRITE_TOKEN": WRITE_TOKEN}
CLAIM_KEY = "feature-platform:test-claim"
# dev.env and prod.env use 1 and 2; tests claim an empty one of the rest.
TEST_REDIS_DBS = range(3, 16)


def _ray_running() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


@contextmanager
def patched_environ(values: Mapping[str, str]) -> Iterator[None]:
    """`environments.in_environ` for a test, never while Ray runs in this process: Ray's
    threads read the environment without a lock, and a variable added under them crashed
    the test session (SIGSEGV in getenv). A Ray started in the block is stopped before the
    environment is restored; one started outside must be stopped before the next block."""
    assert not _ray_running(), "Ray runs in this process: ray.shutdown() before this"
    with environments.in_environ(values):
        try:
            yield
        finally:
            if _ray_running():
                sys.modules["ray"].shutdown()


def _service_defaults() -> dict[str, str]:
    """The local services: trust auth, no Redis password, unless the caller says otherwise."""
    return {
        "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "REDIS_PASSWORD": os.environ.get("REDIS_PASSWORD", ""),
    }


@dataclass
class Stack:
    """One environment's configuration pointed at storage no other test run uses."""

    env: str
    overrides: dict[str, str]
    cleanups: list[Any] = field(default_factory=list)

    @contextmanager
    def active(self) -> Iterator[None]:
        with patched_environ(self.overrides):
            yield

    def settings(self) -> dict[str, str]:
        with self.active():
            return environments.settings(self.env)

    def feast(self, *args: str) -> None:
        with self.active():
            feast_commands.run(self.env, list(args))

    def materialize(self, end: datetime | None = None) -> None:
        """`feature-platform materialize ENV [--end END]` (the CronJob's command), in this
        process."""
        with self.active():
            code = materialize.job(self.env, end, lambda line: print(line, file=sys.stderr))
        assert code == 0, f"materialize {self.env} exited {code}"

    def store(self) -> FeatureStore:
        with self.active():
            return feast_commands.open_store(self.env)

    def server(self, **kwargs: Any) -> FeatureServer:
        """A feature server for this stack, stopped when the stack closes."""
        server = FeatureServer(self.env, **kwargs)
        with self.active():
            server.start()
        self.cleanups.append(server.stop)
        return server

    def offline_server(self, log: Path, **settings: str) -> PlatformServer:
        """This stack's offline server (`settings` over its own), stopped when the stack
        closes; it prints to `log`."""
        server = PlatformServer(self.env, "offline", log=log.open("ab"))
        with self.active(), patched_environ(settings):
            server.start()
        self.cleanups.append(server.stop)
        return server

    def through_offline_server(self, port: int, directory: Path) -> FeatureStore:
        """Feast's SDK with a thin client's offline store, the offline server on `port`;
        the registry read directly."""
        config = yaml.safe_load(environments.feature_store_yaml(self.env).read_text())
        config["offline_store"] = {"type": "remote", "host": "127.0.0.1", "port": port}
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "feature_store.yaml"
        path.write_text(yaml.safe_dump(config))
        with patched_environ(self.settings()):
            return FeatureStore(repo_path=str(environments.FEATURE_REPO), fs_yaml_file=path)

    def write(self, tables: Mapping[str, pd.DataFrame]) -> None:
        offline_tables.write(self.settings(), tables)

    def training_set(self, labels: pd.DataFrame) -> pd.DataFrame:
        return training.training_set(self.store(), labels)

    def redis(self) -> redis.Redis:
        settings = self.settings()
        return _redis_client(settings, int(settings["REDIS_DB"]))

    def close(self) -> None:
        """Stop servers, drop databases, flush the Redis db; safe to call twice."""
        while self.cleanups:
            self.cleanups.pop()()


def _redis_client(settings: Mapping[str, str], db: int) -> redis.Redis:
    return redis.Redis(
        host=settings["REDIS_HOST"],
        port=int(settings["REDIS_PORT"]),
        db=db,
        password=settings["REDIS_PASSWORD"] or None,
    )


def _holder_is_gone(client: redis.Redis) -> bool:
    """The db's claim belongs to a test run of this machine that no longer runs (killed
    before it could release it)."""
    holder = client.get(CLAIM_KEY)
    if holder is None:
        return False
    pid = holder.decode().split("_")[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim_redis_db(settings: Mapping[str, str]) -> int:
    for db in TEST_REDIS_DBS:
        client = _redis_client(settings, db)
        if _holder_is_gone(client):
            client.flushdb()
        if client.set(CLAIM_KEY, RUN_ID, nx=True, ex=6 * 3600):
            if client.dbsize() == 1:
                return db
            client.delete(CLAIM_KEY)
    raise RuntimeError(f"no empty Redis db among {list(TEST_REDIS_DBS)} to claim")


def _release_redis_db(settings: Mapping[str, str], db: int) -> None:
    _redis_client(settings, db).flushdb()


def _drop_databases(settings: Mapping[str, str], names: list[str]) -> None:
    conninfo = offline_tables.postgres_conninfo(settings, "postgres")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for name in names:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def make_stack(env: str, name: str, tmp_dir: Path, extra: Mapping[str, str] | None = None) -> Stack:
    """A fresh, empty copy of `env` named `name` for this test run; `extra` settings
    (another Redis or Postgres port, say) apply before anything is created."""
    overrides = {**_service_defaults(), **(extra or {})}
    if env == environments.LOCAL:
        # Not created yet, as on a fresh checkout: the platform makes it.
        overrides["PLATFORM_DATA_DIR"] = str(tmp_dir / "data")
        return Stack(env, overrides)
    prefix = f"fpt_{RUN_ID}_{name}"
    overrides["REGISTRY_DB"] = f"{prefix}_registry"
    overrides["OFFLINE_DB"] = f"{prefix}_offline"
    with patched_environ(overrides):
        base = environments.settings(env)
    overrides["REDIS_DB"] = str(_claim_redis_db(base))
    stack = Stack(env, overrides)
    settings = stack.settings()
    offline_tables.ensure_databases(settings, lambda _msg: None)
    stack.cleanups.append(lambda: _release_redis_db(settings, int(overrides["REDIS_DB"])))
    stack.cleanups.append(
        lambda: _drop_databases(settings, [overrides["REGISTRY_DB"], overrides["OFFLINE_DB"]])
    )
    if settings.get(offline_mirror.DIR_VAR):
        mirror = Path(settings[offline_mirror.DIR_VAR]) / overrides["OFFLINE_DB"]
        stack.cleanups.append(lambda: shutil.rmtree(mirror, ignore_errors=True))
    return stack
