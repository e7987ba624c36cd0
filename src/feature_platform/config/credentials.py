"""Secrets read from mounted files, and read again whenever the files change.

A Kubernetes Secret mounted as a volume is updated in place when the Secret changes (within
the kubelet's sync period, about a minute); a `secretKeyRef` variable keeps the value its
container started with until the pod is replaced. For each secret a platform process
uses, `<NAME>_FILE` names such a file, and wins over `<NAME>`:

- `POSTGRES_PASSWORD_FILE`: read again for every new connection to PostgreSQL (the SQL
  registry's engines, Feast's offline store, the platform's own tables).
- `REDIS_PASSWORD_FILE`: read again for every new connection to Redis (Feast's clients,
  the feature server's read path).
- `FEATURE_SERVER_WRITE_TOKEN_FILE`: read again for every write request; one token a
  line, each of them accepted, so a rotation has the old and the new at once.

At start the file's first line becomes `<NAME>`, so `${NAME}` in feature_store.yaml and
every check of it see the value as before. A connection or check made with a value read
from the file gets the file's value of the moment instead (`current`, `values`). Connections
already open stay open: Redis and PostgreSQL check a password when a connection opens.
While the file cannot be read (a Secret being replaced), the last value read stays in use
and one warning says so; no value is ever logged. An empty file is an empty value (a
store without a password).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import MutableMapping
from pathlib import Path

from feature_platform.config.guard import ConfigError

log = logging.getLogger("feature_platform.credentials")


class SecretFile:
    """One secret's file and the lines it held when last read."""

    def __init__(self, name: str, several: bool = False) -> None:
        self.name = name
        self.file_var = f"{name}_FILE"
        # several values at once (tokens); a password is one line
        self.several = several
        self._lock = threading.Lock()
        self._path: str | None = None
        self._text: str | None = None
        self._lines: tuple[str, ...] = ()
        self._read: set[str] = set()
        self._warned = False

    def resolve(self, env: MutableMapping[str, str]) -> None:
        """`<NAME>` in `env` from the file `<NAME>_FILE` names, when it names one; a
        ConfigError naming the variable when the file cannot be used."""
        path = env.get(self.file_var, "").strip()
        if not path:
            return
        with self._lock:
            if path != self._path:
                self._path, self._text = path, None
            lines = self._reload(strict=True)
        env[self.name] = lines[0]

    def values(self, value: str) -> tuple[str, ...]:
        """The file's values now when `value` was read from it; else `value` alone."""
        if self._path is None or value not in self._read:
            return (value,)
        with self._lock:
            return self._reload(strict=False)

    def current(self, value: str) -> str:
        """The value to connect with: the file's now when `value` was read from it."""
        return self.values(value)[0]

    def follows(self, value: object) -> bool:
        """Whether `value` was read from the file (and is therefore read again)."""
        return self._path is not None and value in self._read

    def _reload(self, strict: bool) -> tuple[str, ...]:
        # Read every time (a few bytes): a rewrite in place is seen as well as the kubelet's
        # swap of the whole directory.
        assert self._path is not None
        try:
            text = Path(self._path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            return self._keep(strict, f"{self._path!r} cannot be read ({reason})")
        if text == self._text:
            self._warned = False
            return self._lines
        # an empty file is an empty value: a store without a password
        lines = tuple(line for line in text.splitlines() if line) or ("",)
        if len(lines) > 1 and not self.several:
            return self._keep(strict, f"{self._path!r} holds {len(lines)} lines, not one value")
        if self._text is not None and lines != self._lines:
            log.info("%s changed: its new value is used from now on", self.file_var)
        self._text, self._lines, self._warned = text, lines, False
        self._read.update(lines)
        return lines

    def _keep(self, strict: bool, problem: str) -> tuple[str, ...]:
        if strict or self._text is None:
            raise ConfigError(f"{self.file_var} names {problem}")
        if not self._warned:
            self._warned = True
            log.warning("%s names %s; the value read before stays in use", self.file_var, problem)
        return self._lines


POSTGRES_PASSWORD = SecretFile("POSTGRES_PASSWORD")
REDIS_PASSWORD = SecretFile("REDIS_PASSWORD")
WRITE_TOKEN = SecretFile("FEATURE_SERVER_WRITE_TOKEN", several=True)
SECRETS = (POSTGRES_PASSWORD, REDIS_PASSWORD, WRITE_TOKEN)


def resolve(env: MutableMapping[str, str]) -> None:
    """Every secret `env` names a file for, read into `env`; PostgreSQL connections made
    through SQLAlchemy (the SQL registry) follow the file from then on."""
    for secret in SECRETS:
        secret.resolve(env)
    if POSTGRES_PASSWORD.follows(env.get(POSTGRES_PASSWORD.name)):
        _follow_in_sqlalchemy()


def _follow_in_sqlalchemy() -> None:
    """Every SQLAlchemy engine of this process (Feast's SQL registry makes its own) opens
    a connection with the password file's value of the moment."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "do_connect", _current_postgres_password):
        event.listen(Engine, "do_connect", _current_postgres_password)


def _current_postgres_password(
    _dialect: object, _record: object, _args: object, params: dict[str, object]
) -> None:
    password = params.get("password")
    if isinstance(password, str):
        params["password"] = POSTGRES_PASSWORD.current(password)
