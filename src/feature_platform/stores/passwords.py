"""A store's password changed in place: the steps a rotation runs against the stores
(docs/runbooks/rotating-credentials.md). Each connects as the platform does, from an
environment's settings and its password file, so it runs wherever the platform runs (a
server pod: `kubectl exec`).

- Redis, one server (the chart's in-cluster Redis): an ACL user may hold several
  passwords. `add_redis_password` gives the connection's own user one more, for the time
  pods still on the old one and pods on the new one both connect; `remove_redis_password`
  takes the old one away once none uses it. Each is sent as its SHA-256 (`#...`, `!...`),
  so no command Redis could log or show carries the password itself.
- PostgreSQL: a role has one password. `set_postgres_password` changes the connecting
  role's own with ALTER ROLE, sent as the SCRAM verifier libpq computes (as psql's
  `\\password` does), never as text in a statement the server could log.
"""

from __future__ import annotations

import hashlib

import psycopg
import redis
from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType
from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig
from feast.repo_config import RepoConfig
from psycopg import sql

from feature_platform.config.guard import ConfigError
from feature_platform.errors import PlatformError
from feature_platform.feast_seam.stores import postgres_conn_kwargs, postgres_conninfo
from feature_platform.stores.redis_online import RedisOnlineStore


class Refused(PlatformError):
    """The store refused the change; the message carries no password nor its hash."""


def add_redis_password(config: RepoConfig, password: str) -> str:
    """The connection's Redis user accepts `password` too; the user's name."""
    return _redis_acl(config, f"#{_sha256(password)}")


def remove_redis_password(config: RepoConfig, password: str) -> str:
    """The connection's Redis user no longer accepts `password`; the user's name. Refused
    when the user has no such password."""
    return _redis_acl(config, f"!{_sha256(password)}")


def set_postgres_password(config: RepoConfig, password: str) -> str:
    """The connecting PostgreSQL role's password becomes `password`; the role's name.
    Connections open with the old one stay open; new ones need the new one."""
    store = config.offline_store
    if not isinstance(store, PostgreSQLConfig):
        raise ConfigError("this environment's offline store is not PostgreSQL")
    with psycopg.connect(
        postgres_conninfo(store), autocommit=True, **postgres_conn_kwargs(store)
    ) as conn:
        role = str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]
        verifier = conn.pgconn.encrypt_password(password.encode(), role.encode())
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(verifier.decode())
            )
        )
    return role


def _redis_acl(config: RepoConfig, rule: str) -> str:
    online = config.online_store
    if not isinstance(online, RedisOnlineStoreConfig):
        raise ConfigError("this environment's online store is not Redis")
    if online.redis_type != RedisType.redis:
        # ACLs are each node's own: a cluster or a Sentinel group needs the rule on every node
        raise ConfigError(
            f"a password is added here on one Redis server, not with redis_type "
            f"{online.redis_type.value}: set it on every node (see the rotation runbook)"
        )
    store = RedisOnlineStore()
    client = store.sync_client(online)
    try:
        user = str(client.execute_command("ACL", "WHOAMI"), "utf-8")
        client.execute_command("ACL", "SETUSER", user, rule)
    except redis.ResponseError as exc:
        # Redis quotes the rule, the password's hash: left out
        raise Refused(f"Redis: {str(exc).replace(rule, rule[0] + '<sha256>')}") from None
    finally:
        store.drop_sync_client()
    return user


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()
