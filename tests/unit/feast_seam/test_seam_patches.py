"""patches.import_feast_unchecked, patches.compared_also_by, patches.postgres_password,
and the ttl patch's import hook (its rule: test_seam_online_ttl.py)."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WRONG_TYPE = """
try:
    Entity(name=1, join_keys=["customer_id"])
    print("unchecked")
except TypeCheckError:
    print("checked")
"""
# Two fresh interpreters, where Feast is not imported yet: one through the seam, one as
# Feast imports the platform's online store (its `type:` path).
UNCHECKED = """
from typeguard import TypeCheckError
from feature_platform.feast_seam import patches
patches.import_feast_unchecked()
from feast import Entity
"""
# A command run as a process of its own, then Feast imported as it left it.
AS_A_COMMAND = """
import sys
from typeguard import TypeCheckError
from feature_platform.cli import main
sys.argv = ["feature-platform", *{args!r}]
main()
from feast import Entity
"""
AS_FEAST_IMPORTS_THE_STORE = """
from typeguard import TypeCheckError
import feature_platform.stores.sqlite_online
from feast import Entity, utils
print(hasattr(utils._populate_response_from_feature_data, "__wrapped__"))
"""


@pytest.fixture(scope="module")
def fresh_imports() -> dict[str, tuple[list[str], str]]:
    """Each script's lines of output and the end of its stderr; both at once, as each
    spends seconds importing Feast."""
    scripts = {
        "unchecked": UNCHECKED,
        "store": AS_FEAST_IMPORTS_THE_STORE,
        "job": AS_A_COMMAND.format(args=["check-config", "local"]),
        "plan": AS_A_COMMAND.format(args=["plan", "local"]),
    }
    running = {
        name: subprocess.Popen(
            [sys.executable, "-c", code + WRONG_TYPE],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, code in scripts.items()
    }
    results = {}
    for name, process in running.items():
        out, err = process.communicate(timeout=120)
        results[name] = (out.split(), err[-400:])
    return results


@pytest.mark.seam("patches.import_feast_unchecked")
def test_feast_imported_unchecked_skips_typeguard(
    fresh_imports: dict[str, tuple[list[str], str]],
) -> None:
    assert fresh_imports["unchecked"][0] == ["unchecked"], fresh_imports["unchecked"][1]
    assert fresh_imports["store"][0][-1:] == ["checked"], fresh_imports["store"][1]


@pytest.mark.seam("patches.online_ttl")
def test_importing_a_platform_online_store_installs_the_ttl_patch(
    fresh_imports: dict[str, tuple[list[str], str]],
) -> None:
    assert fresh_imports["store"][0][:1] == ["True"], fresh_imports["store"][1]


@pytest.mark.seam("patches.compared_also_by")
def test_a_logging_change_alone_is_applied_only_through_the_copy(
    store: Any, objects: dict[str, Any], tmp_path: Path
) -> None:
    from feast import FeatureService
    from feast.feature_logging import LoggingConfig
    from feast.infra.offline_stores.file_source import FileLoggingDestination

    from feature_platform.feast_seam.patches import compared_also_by
    from feature_platform.rollouts.plan import logging_text

    logged = FeatureService(
        name="svc",
        features=[objects["counts"]],
        logging_config=LoggingConfig(
            destination=FileLoggingDestination(path=str(tmp_path / "log")), sample_rate=1.0
        ),
    )
    assert logged == objects["svc"]  # Feast's == leaves logging_config out

    def stored_logging() -> Any:
        return store.registry.get_feature_service("svc", store.project).logging_config

    store.registry.apply_feature_service(logged, store.project)
    assert stored_logging() is None  # skipped: equal to the stored one
    compared = compared_also_by(logged, logging_text)
    assert compared != objects["svc"] and compared == logged
    store.registry.apply_feature_service(compared, store.project)
    assert stored_logging() is not None


@pytest.mark.seam("patches.postgres_password")
def test_feast_postgres_connections_open_with_the_password_file_of_the_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from feast.infra.utils.postgres import connection_utils
    from feast.infra.utils.postgres.postgres_config import PostgreSQLConfig

    from feature_platform.config import credentials
    from feature_platform.feast_seam import patches

    for connect in (
        connection_utils._get_conn,
        connection_utils._get_conn_async,
        connection_utils._get_connection_pool,
        connection_utils._get_connection_pool_async,
    ):
        assert "conninfo=_get_conninfo(config)" in inspect.getsource(connect)
    secret = credentials.SecretFile("POSTGRES_PASSWORD")
    monkeypatch.setattr(credentials, "POSTGRES_PASSWORD", secret)
    monkeypatch.setattr(connection_utils, "_get_conninfo", connection_utils._get_conninfo)
    path = tmp_path / "postgres-password"
    path.write_text("first-password\n")
    env = {"POSTGRES_PASSWORD_FILE": str(path)}
    secret.resolve(env)
    patches.install_postgres_password()
    path.write_text("the-second-password\n")
    mine = PostgreSQLConfig(host="db", database="d", user="u", password=env["POSTGRES_PASSWORD"])
    other = PostgreSQLConfig(host="db", database="d", user="u", password="not-from-the-file")
    assert "password=the-second-password" in connection_utils._get_conninfo(mine)
    assert "password=not-from-the-file" in connection_utils._get_conninfo(other)


@pytest.mark.seam("patches.import_feast_unchecked")
def test_jobs_and_servers_start_unchecked_while_definitions_stay_checked(
    fresh_imports: dict[str, tuple[list[str], str]],
) -> None:
    """Every command but those importing the feature repository's definitions (plan,
    apply, demo, feast) skips the instrumentation; plan here fails at once on an
    environment without a registry database, which leaves Feast to import as usual."""
    assert fresh_imports["job"][0][-1:] == ["unchecked"], fresh_imports["job"][1]
    assert fresh_imports["plan"][0][-1:] == ["checked"], fresh_imports["plan"][1]
