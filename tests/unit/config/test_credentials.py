"""Secrets from mounted files (config/credentials.py): read at start into the variable
feature_store.yaml names, read again for every use once the file changed, and kept as
they were while the file is being replaced."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from feature_platform.config import credentials
from feature_platform.config.guard import ConfigError


def _replace(path: Path, text: str) -> None:
    """As the kubelet updates a mounted Secret: a new file put in place in one rename."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


@pytest.fixture
def password(tmp_path: Path) -> tuple[credentials.SecretFile, Path]:
    path = tmp_path / "redis-password"
    path.write_text("first-password\n")
    return credentials.SecretFile("REDIS_PASSWORD"), path


def test_the_file_wins_over_the_variable_and_its_first_line_is_the_value(
    password: tuple[credentials.SecretFile, Path],
) -> None:
    secret, path = password
    env = {"REDIS_PASSWORD": "stale", "REDIS_PASSWORD_FILE": str(path)}
    secret.resolve(env)
    assert env["REDIS_PASSWORD"] == "first-password"
    # without a file, the variable is the value and nothing follows it
    plain = {"REDIS_PASSWORD": "plain"}
    credentials.SecretFile("REDIS_PASSWORD").resolve(plain)
    assert plain == {"REDIS_PASSWORD": "plain"}


def test_a_value_read_from_the_file_follows_it_and_no_other_does(
    password: tuple[credentials.SecretFile, Path],
) -> None:
    secret, path = password
    env = {"REDIS_PASSWORD_FILE": str(path)}
    secret.resolve(env)
    _replace(path, "second-password")
    assert secret.current(env["REDIS_PASSWORD"]) == "second-password"
    assert secret.current("second-password") == "second-password"
    assert secret.current("someone-elses") == "someone-elses"
    assert not secret.follows("someone-elses") and secret.follows("first-password")


def test_several_values_are_for_tokens_only(tmp_path: Path) -> None:
    path = tmp_path / "write-token"
    path.write_text("old-token-0123456789\nnew-token-0123456789\n")
    token = credentials.SecretFile("FEATURE_SERVER_WRITE_TOKEN", several=True)
    env = {"FEATURE_SERVER_WRITE_TOKEN_FILE": str(path)}
    token.resolve(env)
    assert env["FEATURE_SERVER_WRITE_TOKEN"] == "old-token-0123456789"
    assert token.values(env["FEATURE_SERVER_WRITE_TOKEN"]) == (
        "old-token-0123456789",
        "new-token-0123456789",
    )
    with pytest.raises(ConfigError, match=r"REDIS_PASSWORD_FILE names .* holds 2 lines"):
        credentials.SecretFile("REDIS_PASSWORD").resolve({"REDIS_PASSWORD_FILE": str(path)})


def test_a_missing_file_at_start_stops_the_process(tmp_path: Path) -> None:
    path = tmp_path / "postgres-password"
    with pytest.raises(ConfigError, match=r"^POSTGRES_PASSWORD_FILE names '.*postgres-password'"):
        credentials.SecretFile("POSTGRES_PASSWORD").resolve({"POSTGRES_PASSWORD_FILE": str(path)})


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_file_is_no_password(tmp_path: Path, content: str) -> None:
    # a store without AUTH, as an empty Secret value says
    path = tmp_path / "redis-password"
    path.write_text(content)
    env = {"REDIS_PASSWORD_FILE": str(path)}
    secret = credentials.SecretFile("REDIS_PASSWORD")
    secret.resolve(env)
    assert env["REDIS_PASSWORD"] == "" and secret.current("") == ""


def test_a_file_being_replaced_later_keeps_the_last_value_with_one_warning(
    password: tuple[credentials.SecretFile, Path], caplog: pytest.LogCaptureFixture
) -> None:
    secret, path = password
    env = {"REDIS_PASSWORD_FILE": str(path)}
    secret.resolve(env)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="feature_platform.credentials"):
        assert secret.current("first-password") == "first-password"
        assert secret.current("first-password") == "first-password"
    assert len(caplog.records) == 1
    assert "first-password" not in caplog.text
    _replace(path, "back-again")
    assert secret.current("first-password") == "back-again"


def test_sqlalchemy_connections_get_the_password_of_the_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy import create_engine, event
    from sqlalchemy.engine import Engine

    secret = credentials.SecretFile("POSTGRES_PASSWORD")
    monkeypatch.setattr(credentials, "POSTGRES_PASSWORD", secret)
    monkeypatch.setattr(credentials, "SECRETS", (secret,))
    path = tmp_path / "postgres-password"
    path.write_text("first-password")
    env = {"POSTGRES_PASSWORD_FILE": str(path)}
    credentials.resolve(env)
    try:
        assert event.contains(Engine, "do_connect", credentials._current_postgres_password)
        _replace(path, "second-password")
        engine = create_engine(
            "postgresql+psycopg://someone@127.0.0.1:1/db",
            connect_args={"password": env["POSTGRES_PASSWORD"], "connect_timeout": 1},
        )
        seen: list[object] = []

        @event.listens_for(engine, "do_connect")
        def record(_dialect: object, _record: object, _args: object, params: dict) -> None:
            seen.append(params["password"])
            raise ConnectionRefusedError("recorded, not connected")

        with pytest.raises(Exception, match="recorded, not connected"):
            engine.connect()
        assert seen == ["second-password"]
    finally:
        event.remove(Engine, "do_connect", credentials._current_postgres_password)
