from __future__ import annotations

import os
from pathlib import Path

import pytest

from feature_platform.config import environments
from feature_platform.config.guard import ConfigError


def test_env_file_lines(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("# comment\n\nA=1\nB = two words \nC=\n")
    assert environments.read_env_file(path) == {"A": "1", "B": "two words", "C": ""}


def test_env_file_rejects_a_line_without_assignment(tmp_path: Path) -> None:
    path = tmp_path / "x.env"
    path.write_text("A=1\nexport B\n")
    with pytest.raises(ConfigError, match=r"x.env:2: expected KEY=VALUE"):
        environments.read_env_file(path)


def test_process_environment_wins_over_the_file() -> None:
    settings = environments.settings("dev", {"REGISTRY_DB": "elsewhere"})
    assert settings["REGISTRY_DB"] == "elsewhere"
    assert settings["OFFLINE_DB"] == "feast_dev_offline"
    assert settings["PLATFORM_ENV"] == "dev"


def test_local_data_dir_is_taken_from_the_project_root() -> None:
    settings = environments.settings("local", {})
    assert settings["PLATFORM_DATA_DIR"] == str(environments.PROJECT_ROOT / ".data" / "local")
    assert (
        environments.settings("local", {"PLATFORM_DATA_DIR": "/tmp/x"})["PLATFORM_DATA_DIR"]
        == "/tmp/x"
    )


def test_dev_and_prod_share_one_feature_store_yaml() -> None:
    assert environments.feature_store_yaml("dev") == environments.feature_store_yaml("prod")
    assert environments.feature_store_yaml("local").name == "feature_store.local.yaml"
    assert {"local", "dev", "prod"} <= set(environments.available())


def test_dev_and_prod_differ_only_in_values_not_in_keys() -> None:
    dev = environments.read_env_file(environments.ENV_DIR / "dev.env")
    prod = environments.read_env_file(environments.ENV_DIR / "prod.env")
    assert dev.keys() == prod.keys()
    assert not any("PASSWORD" in key for key in dev), "secrets never live in env files"


def test_feature_store_yaml_can_point_at_a_mounted_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATURE_STORE_YAML", "/etc/feast/feature_store.yaml")
    assert environments.feature_store_yaml("prod") == Path("/etc/feast/feature_store.yaml")


def _writes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    """Every write os.environ makes to the C environment, from now on."""
    writes: list[tuple[str, ...]] = []
    real_put, real_unset = os.putenv, os.unsetenv

    def put(name: str, value: str) -> None:
        writes.append(("set", os.fsdecode(name)))
        real_put(name, value)

    def unset(name: str) -> None:
        writes.append(("unset", os.fsdecode(name)))
        real_unset(name)

    monkeypatch.setattr(os, "putenv", put)
    monkeypatch.setattr(os, "unsetenv", unset)
    return writes


def test_in_environ_writes_only_what_differs_and_restores_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IN_ENVIRON_KEPT", "same")
    monkeypatch.setenv("IN_ENVIRON_CHANGED", "before")
    monkeypatch.delenv("IN_ENVIRON_ADDED", raising=False)
    monkeypatch.delenv("IN_ENVIRON_BY_THE_BLOCK", raising=False)
    writes = _writes(monkeypatch)
    values = {"IN_ENVIRON_KEPT": "same", "IN_ENVIRON_CHANGED": "after", "IN_ENVIRON_ADDED": "1"}
    with environments.in_environ(values):
        assert writes == [("set", "IN_ENVIRON_CHANGED"), ("set", "IN_ENVIRON_ADDED")]
        assert {name: os.environ[name] for name in values} == values
        os.environ["IN_ENVIRON_BY_THE_BLOCK"] = "x"
        del os.environ["IN_ENVIRON_KEPT"]
    assert os.environ["IN_ENVIRON_KEPT"] == "same"
    assert os.environ["IN_ENVIRON_CHANGED"] == "before"
    assert "IN_ENVIRON_ADDED" not in os.environ
    assert "IN_ENVIRON_BY_THE_BLOCK" not in os.environ
    # Nothing else was written: the environment was never cleared and refilled, which
    # moved the C array under threads reading it (a SIGSEGV in a thread of Ray's).
    assert sorted(writes[2:]) == sorted([
        ("set", "IN_ENVIRON_BY_THE_BLOCK"), ("unset", "IN_ENVIRON_KEPT"),
        ("unset", "IN_ENVIRON_ADDED"), ("unset", "IN_ENVIRON_BY_THE_BLOCK"),
        ("set", "IN_ENVIRON_KEPT"), ("set", "IN_ENVIRON_CHANGED"),
    ])  # fmt: skip


def test_in_environ_with_the_values_already_there_writes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IN_ENVIRON_KEPT", "same")
    writes = _writes(monkeypatch)
    with environments.in_environ({"IN_ENVIRON_KEPT": "same", "HOME": os.environ["HOME"]}):
        pass
    assert writes == []
