"""Upgrading Feast under a running environment: a registry written by the previous Feast
release is planned, applied, materialized and served by the platform on the pinned one.

The previous release runs from a virtualenv of its own, installed by this test from the
package registry with Feast's own store types (the platform's stores are built on the
pinned release): `feast apply` there writes the registry, as an environment deployed
before the upgrade would have.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import AS_OF, MAT_END, SEED
from stacks import Stack

from feature_platform import cli
from feature_platform.config import environments
from feature_platform.devtools import generator
from feature_platform.errors import EXIT_OK
from feature_platform.rollouts.plan import plan

# The release before the pinned one (pyproject.toml pins feast==0.67.0).
PREVIOUS_FEAST = "0.66.0"
SIZES = generator.Sizes(customers=40, merchants=5, days=3, transactions=200)
# The platform's store types and Feast's own ones they extend.
FEAST_TYPES = {
    "feature_platform.stores.redis_online.RedisOnlineStore": "redis",
    "feature_platform.stores.postgres_offline.PostgreSQLOfflineStore": "postgres",
}


@pytest.fixture(scope="session")
def previous_feast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`feast` of the previous release, in a virtualenv of its own."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not installed: it installs the previous Feast release")
    assert version("feast") != PREVIOUS_FEAST, "PREVIOUS_FEAST is the pinned release"
    venv = tmp_path_factory.mktemp("feast_previous") / "venv"
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         f"feast[postgres,redis]=={PREVIOUS_FEAST}"],
        check=True,
        timeout=600,
    )  # fmt: skip
    return venv / "bin" / "feast"


def _repository_for_previous_feast(stack: Stack, work: Path) -> Path:
    """The feature repository with Feast's own store types in its feature_store.yaml."""
    repo = work / "repo"
    shutil.copytree(environments.FEATURE_REPO, repo, ignore=shutil.ignore_patterns("*.yaml"))
    text = environments.feature_store_yaml(stack.env).read_text()
    for platform_type, feast_type in FEAST_TYPES.items():
        assert f"type: {platform_type}\n" in text
        text = text.replace(f"type: {platform_type}\n", f"type: {feast_type}\n")
    (repo / "feature_store.yaml").write_text(text)
    return repo


def test_a_registry_of_the_previous_release_upgrades_cleanly(
    previous_feast: Path, stack_factory: Callable[..., Stack], tmp_path: Path
) -> None:
    stack = stack_factory("dev", "upgrade")
    stack.write(generator.generate(SIZES, seed=SEED, as_of=AS_OF))
    repo = _repository_for_previous_feast(stack, tmp_path)
    applied = subprocess.run(
        [str(previous_feast), "-f", str(repo / "feature_store.yaml"), "apply"],
        cwd=repo,
        env={**stack.settings(), "PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert applied.returncode == 0, applied.stderr[-3000:]
    written_by = subprocess.run(
        [str(previous_feast), "version"], capture_output=True, text=True, check=True
    )
    assert PREVIOUS_FEAST in written_by.stdout

    with stack.active():
        planned = plan(stack.env)
        assert not planned.changes, planned.markdown()
        assert cli.main(["apply", stack.env]) == EXIT_OK
    stack.materialize(MAT_END)
    server = stack.server()
    with stack.active():
        checked = cli.main(["skew-check", stack.env, "--server-url", server.url,
                            "--rows", "100", "--seed", "5"])  # fmt: skip
    assert checked == EXIT_OK
