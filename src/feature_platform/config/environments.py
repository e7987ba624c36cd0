"""Where things are, and how an environment's settings reach Feast.

An environment is a name with a `ci/env/<name>.env` file of non-secret settings. `local`
uses `feature_store.local.yaml`; every other environment shares `feature_store.yaml`.
Variables already set in the process environment win over the file, so CI secrets and
test overrides need no edits. A secret may come from a file instead (`<NAME>_FILE`, a
mounted Secret): `credentials` reads it, and reads it again when it changes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from feature_platform.config import auth as auth_config
from feature_platform.config import credentials
from feature_platform.config.guard import ConfigError

PROJECT_ROOT = Path(os.environ.get("PLATFORM_ROOT", Path(__file__).resolve().parents[3]))
FEATURE_REPO = PROJECT_ROOT / "feature_repo"
# Points the platform at another copy of the feature repository: a checkout being
# planned, or a test's edited copy. FEATURE_REPO stays the default.
FEATURE_REPO_DIR_VAR = "FEATURE_REPO_DIR"
ENV_DIR = PROJECT_ROOT / "ci" / "env"
LOCAL = "local"


@contextmanager
def in_environ(values: Mapping[str, str]) -> Iterator[None]:
    """`values` in this process's environment for the block; afterwards the environment
    as it was before it, whatever the block changed.

    Only the variables that differ are written, each way. C code reads the environment
    without a lock (glibc's getenv), from threads of its own (Ray's, libpq connecting):
    adding a variable can move the array such a thread is reading, and clearing and
    refilling the whole environment (as this once did) added every variable and left the
    environment empty in between. Setting a variable to the value it has writes nothing."""
    saved = dict(os.environ)
    for name, value in values.items():
        if saved.get(name) != value:
            os.environ[name] = value
    try:
        yield
    finally:
        for name in [name for name in os.environ if name not in saved]:
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


def available() -> list[str]:
    return sorted(p.stem for p in ENV_DIR.glob("*.env"))


def feature_repo() -> Path:
    """The feature repository Feast imports definitions from."""
    override = os.environ.get(FEATURE_REPO_DIR_VAR)
    return Path(override).resolve() if override else FEATURE_REPO


def feature_store_yaml(env: str) -> Path:
    """The environment's Feast configuration; `FEATURE_STORE_YAML` points elsewhere
    (in a pod: the file mounted from the chart's ConfigMap)."""
    override = os.environ.get("FEATURE_STORE_YAML")
    if override:
        return Path(override)
    name = "feature_store.local.yaml" if env == LOCAL else "feature_store.yaml"
    return feature_repo() / name


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments ignored; no shell expansion."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE")
        values[key.strip()] = value.strip()
    return values


def settings(env: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment for Feast in `env`: the env file under `base`."""
    path = ENV_DIR / f"{env}.env"
    if not path.is_file():
        raise ConfigError(
            f"unknown environment {env!r}: no {path.relative_to(PROJECT_ROOT)} "
            f"(known: {', '.join(available())})"
        )
    base = os.environ if base is None else base
    merged = {**read_env_file(path), **base}
    for directory in ("PLATFORM_DATA_DIR", "OFFLINE_MIRROR_DIR"):
        if merged.get(directory):
            merged[directory] = str((PROJECT_ROOT / merged[directory]).resolve())
    merged["PLATFORM_ENV"] = env
    credentials.resolve(merged)
    # Feast's `auth:` block, derived from AUTH_TYPE and OIDC_* (and checked) every time,
    # so no copy of it can drift from the settings the platform's verifier uses.
    merged[auth_config.FEAST_AUTH_VAR] = auth_config.feast_auth(merged)
    return merged
