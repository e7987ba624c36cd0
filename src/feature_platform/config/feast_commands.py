"""Every Feast command the platform issues goes through here, behind the config guard."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from feature_platform.config import environments
from feature_platform.config import guard as config_guard

if TYPE_CHECKING:
    from feast import FeatureStore

FEAST_BIN = Path(sys.executable).parent / "feast"


def prepare(env: str) -> dict[str, str]:
    """The checked process environment for `env`; ConfigError if anything is missing."""
    values = environments.settings(env)
    config_guard.check(environments.feature_store_yaml(env), values)
    if values.get("PLATFORM_DATA_DIR"):
        # SQLite creates its files, not their directory: a fresh checkout has none.
        Path(values["PLATFORM_DATA_DIR"]).mkdir(parents=True, exist_ok=True)
    return values


def feast_argv(env: str, args: Sequence[str]) -> list[str]:
    return [str(FEAST_BIN), "-f", str(environments.feature_store_yaml(env)), *args]


def run(env: str, args: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `feast <args>` for `env` in the feature repository, output passed through."""
    values = prepare(env)
    return subprocess.run(
        feast_argv(env, args), cwd=environments.feature_repo(), env=values, check=check, text=True
    )


def start(env: str, args: Sequence[str], **popen_kwargs: object) -> subprocess.Popen[bytes]:
    """Start a long-running `feast <args>` (a server) for `env`."""
    values = prepare(env)
    return subprocess.Popen(  # type: ignore[call-overload]
        feast_argv(env, args), cwd=environments.feature_repo(), env=values, **popen_kwargs
    )


def open_store(env: str) -> FeatureStore:
    """An in-process FeatureStore for `env`.

    Feast expands variables from this process's environment when it reads the
    configuration, so the environment's settings are in place for that moment only.
    """
    from feast import FeatureStore  # slow to import: only where a store is needed

    values = prepare(env)
    saved = dict(os.environ)
    os.environ.update(values)
    try:
        return FeatureStore(
            repo_path=str(environments.feature_repo()),
            fs_yaml_file=environments.feature_store_yaml(env),
        )
    finally:
        # Leave no environment's settings behind to leak into the next one's.
        os.environ.clear()
        os.environ.update(saved)
