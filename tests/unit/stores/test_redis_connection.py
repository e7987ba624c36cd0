"""Every Redis client the platform builds reads its password through `redis_connection`:
one from REDIS_PASSWORD_FILE is asked again at each new connection, with the ACL user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from feast.infra.online_stores.redis import RedisOnlineStoreConfig

from feature_platform.config import credentials
from feature_platform.stores import redis_connection
from feature_platform.stores.redis_online import RedisOnlineStore


@pytest.fixture
def password_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    secret = credentials.SecretFile("REDIS_PASSWORD")
    monkeypatch.setattr(credentials, "REDIS_PASSWORD", secret)
    path = tmp_path / "redis-password"
    path.write_text("first-password")
    secret.resolve({"REDIS_PASSWORD_FILE": str(path)})
    return path


def test_a_password_from_the_file_becomes_a_provider_that_reads_it_again(
    password_file: Path,
) -> None:
    nodes, kwargs = redis_connection.parse(
        "redis-a:6379,db=3,username=feast,password=first-password,socket_timeout=2"
    )
    assert nodes == [{"host": "redis-a", "port": "6379"}]
    assert "password" not in kwargs and "username" not in kwargs
    provider = kwargs["credential_provider"]
    assert provider.get_credentials() == ("feast", "first-password")
    staged = password_file.with_name("staged")
    staged.write_text("second-password")
    os.replace(staged, password_file)
    assert provider.get_credentials() == ("feast", "second-password")
    # the default user: the password alone, as redis-py sends AUTH <password>
    _, default = redis_connection.parse("redis-a:6379,username=,password=first-password")
    assert default["credential_provider"].get_credentials() == ("second-password",)


def test_an_emptied_file_means_no_auth(password_file: Path) -> None:
    _, kwargs = redis_connection.parse("redis-a:6379,username=feast,password=first-password")
    password_file.write_text("")
    assert kwargs["credential_provider"].get_credentials() == ()


def test_any_other_password_is_left_as_feast_reads_it(password_file: Path) -> None:
    _, kwargs = redis_connection.parse("redis-a:6379,password=from-elsewhere")
    assert kwargs == {"password": "from-elsewhere"}


def test_the_stores_clients_are_built_on_it(password_file: Path) -> None:
    store = RedisOnlineStore()
    config = RedisOnlineStoreConfig(connection_string="127.0.0.1:1,password=first-password")
    # redis-py connects on the first command: nothing is sent here
    pool = store._get_client(config).connection_pool
    assert isinstance(
        pool.connection_kwargs["credential_provider"], redis_connection.FileCredentials
    )
