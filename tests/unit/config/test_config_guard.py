"""The config guard: Feast would keep an unset ${VAR} as literal text; we stop first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from feature_platform.config import environments
from feature_platform.config import guard as config_guard
from feature_platform.config.guard import ConfigError
from feature_platform.errors import EXIT_CONFIG_ERROR


def test_finds_both_reference_forms_once_each_in_order() -> None:
    text = "a: ${ONE}\nb: $TWO/${ONE}\nc: plain\nd: ${THREE}x"
    assert config_guard.referenced_variables(text) == ["ONE", "TWO", "THREE"]


def test_names_every_missing_variable(tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text("host: ${DB_HOST}\nport: ${DB_PORT}\nuser: ${DB_USER}\n")
    with pytest.raises(ConfigError) as err:
        config_guard.check(yaml, {"DB_PORT": "5432"})
    assert "DB_HOST, DB_USER" in str(err.value)
    assert "DB_PORT" not in str(err.value)


def test_an_empty_value_counts_as_set(tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text('password: "${SOME_PASSWORD}"\n')
    config_guard.check(yaml, {"SOME_PASSWORD": ""})


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("abc,def", "comma"),
        ("12345", "JSON literal"),
        ("true", "JSON literal"),
        ('say"hi', "double quote"),
    ],
)
def test_redis_passwords_feast_would_misread_are_refused(password: str, problem: str) -> None:
    env = {**environments.settings("dev", {}), "POSTGRES_PASSWORD": "", "REDIS_PASSWORD": password}
    with pytest.raises(ConfigError) as err:
        config_guard.check(environments.feature_store_yaml("dev"), env)
    assert problem in str(err.value)
    assert password not in str(err.value), "the guard must not print a secret"


def test_dev_and_prod_need_only_the_secrets_beyond_their_env_files() -> None:
    for env in ("dev", "prod"):
        settings = environments.settings(env, {})
        with pytest.raises(ConfigError) as err:
            config_guard.check(environments.feature_store_yaml(env), settings)
        assert "variables: POSTGRES_PASSWORD, REDIS_PASSWORD (" in str(err.value)
        config_guard.check(
            environments.feature_store_yaml(env),
            {**settings, "POSTGRES_PASSWORD": "s3cret", "REDIS_PASSWORD": "an0ther"},
        )


def _cli(
    *args: str, drop: tuple[str, ...] = (), extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in drop} | (extra or {})
    return subprocess.run(
        [sys.executable, "-m", "feature_platform", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check-config", "dev"),
        ("feast", "dev", "--", "plan"),
        ("generate", "prod"),
        ("materialize", "dev"),
    ],
)
def test_cli_stops_with_exit_2_naming_the_missing_variable(args: tuple[str, ...]) -> None:
    result = _cli(*args, drop=("POSTGRES_PASSWORD", "REDIS_PASSWORD", "REDIS_HOST"))
    assert result.returncode == EXIT_CONFIG_ERROR
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "POSTGRES_PASSWORD" in lines[0] and "REDIS_PASSWORD" in lines[0]
    assert result.stdout == "", "Feast must not have run"


def test_cli_names_an_unknown_environment() -> None:
    result = _cli("check-config", "staging")
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "unknown environment 'staging'" in result.stderr


def test_missing_passwords_come_with_what_to_export_for_the_local_services() -> None:
    """Secrets are in no env file, so a direct command on the local services (trust auth,
    no Redis password) needs them set, even empty; the error says how in the same line."""
    result = _cli("check-config", "dev", drop=("POSTGRES_PASSWORD", "REDIS_PASSWORD"))
    assert result.returncode == EXIT_CONFIG_ERROR
    (line,) = result.stderr.strip().splitlines()
    assert "export POSTGRES_PASSWORD= REDIS_PASSWORD=" in line
    exported = _cli("check-config", "dev", extra={"POSTGRES_PASSWORD": "", "REDIS_PASSWORD": ""})
    assert exported.returncode == 0, exported.stderr


def test_a_missing_setting_gets_no_password_hint(tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text("registry: ${REGISTRY_URL}\n")
    with pytest.raises(ConfigError) as raised:
        config_guard.check(yaml, {})
    assert "REGISTRY_URL" in str(raised.value) and "export" not in str(raised.value)


def test_a_redis_pipeline_error_loses_the_command_it_quotes() -> None:
    """redis-py's annotation names the failed command with its arguments: the values
    written. The one line keeps Redis's own message."""
    import redis

    exc = redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    command = ("EVALSHA", "6c04", 1, b"\x01entity", "feature-value-42")
    redis.client.Pipeline.annotate_exception(None, exc, 1, command)  # type: ignore[arg-type]
    assert "feature-value-42" in str(exc)
    assert config_guard.one_line_error(exc, {}) == (
        "OutOfMemoryError: command not allowed when used memory > 'maxmemory'."
    )


@pytest.mark.parametrize("value", ["true", "'yes'", "1"])
def test_feasts_online_view_versioning_is_refused(tmp_path: Path, value: str) -> None:
    """On, Feast writes `{view}_v{N}` fields the fast path does not read: it would serve
    the unversioned, stale ones."""
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text(f"registry:\n  path: x.db\n  enable_online_feature_view_versioning: {value}\n")
    with pytest.raises(ConfigError, match="enable_online_feature_view_versioning"):
        config_guard.check(yaml, {})


def test_view_versioning_off_passes(tmp_path: Path) -> None:
    yaml = tmp_path / "feature_store.yaml"
    yaml.write_text("registry:\n  path: x.db\n  enable_online_feature_view_versioning: false\n")
    config_guard.check(yaml, {})
