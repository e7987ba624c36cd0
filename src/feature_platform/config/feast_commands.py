"""Every Feast command the platform issues goes through here, behind the config guard."""

from __future__ import annotations

import builtins
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from feature_platform.config import environments
from feature_platform.config import guard as config_guard

if TYPE_CHECKING:
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

FEAST_BIN = Path(sys.executable).parent / "feast"

# Warnings a user of the platform cannot act on, silenced in its processes and in the
# Feast commands it runs: Feast's notice at every use of an on-demand view, and a
# deprecation inside ibis (Feast's duckdb store). As -W options: action:message:category.
QUIET_WARNINGS = (
    "ignore:On demand feature view is an experimental feature:RuntimeWarning",
    "ignore:fetch_arrow_table:DeprecationWarning",
)


def quiet_warnings() -> None:
    """Silence QUIET_WARNINGS in this process and the workers it forks. Importing Feast
    puts its own filters first (`simplefilter("once", ...)` in several modules), so this
    runs once Feast is imported."""
    for entry in QUIET_WARNINGS:
        action, message, category = entry.split(":")
        warnings.filterwarnings(
            action,  # type: ignore[arg-type]
            message=re.escape(message),
            category=getattr(builtins, category),
        )


def prepare(env: str) -> dict[str, str]:
    """The checked process environment for `env`; ConfigError if anything is missing."""
    values = environments.settings(env)
    config_guard.check(environments.feature_store_yaml(env), values)
    if values.get("PLATFORM_DATA_DIR"):
        # SQLite creates its files, not their directory: a fresh checkout has none.
        Path(values["PLATFORM_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    return values


def run(env: str, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `feast <args>` for `env` in the feature repository, output passed through,
    without the warnings a user cannot act on (`feast_cli`)."""
    values = prepare(env)
    argv = [sys.executable, "-m", "feature_platform.config.feast_cli", *_file_args(env), *args]
    return subprocess.run(argv, cwd=environments.feature_repo(), env=values, check=check, text=True)


def start(env: str, args: Sequence[str], **popen_kwargs: object) -> subprocess.Popen[bytes]:
    """Start a long-running `feast <args>` (a server) for `env`: Feast's own command."""
    values = prepare(env)
    return subprocess.Popen(  # type: ignore[call-overload]
        [str(FEAST_BIN), *_file_args(env), *args],
        cwd=environments.feature_repo(),
        env=values,
        **popen_kwargs,
    )


def _file_args(env: str) -> list[str]:
    return ["-f", str(environments.feature_store_yaml(env))]


@contextmanager
def _settings_in_environ(env: str) -> Iterator[None]:
    """Feast expands variables from this process's environment when it reads the
    configuration, so the environment's settings are in place for that moment only (and
    leave nothing behind to leak into the next one's)."""
    with environments.in_environ(prepare(env)):
        yield


def open_store(env: str) -> FeatureStore:
    """An in-process FeatureStore for `env`."""
    from feast import FeatureStore  # slow to import: only where a store is needed

    quiet_warnings()
    with _settings_in_environ(env):
        return FeatureStore(
            repo_path=str(environments.feature_repo()),
            fs_yaml_file=environments.feature_store_yaml(env),
        )


def repo_config(env: str) -> RepoConfig:
    """`env`'s Feast configuration alone: no registry opened, no store built."""
    from feast.repo_config import load_repo_config

    quiet_warnings()
    with _settings_in_environ(env):
        return load_repo_config(environments.feature_repo(), environments.feature_store_yaml(env))
