from __future__ import annotations

import pytest

from feature_platform.config.guard import ConfigError
from feature_platform.serving.settings import ServerSettings


def test_defaults_serve_read_only_without_recycling() -> None:
    settings = ServerSettings.from_env({})
    assert settings.write_mode == "off"
    assert settings.max_requests == 0
    assert settings.max_in_flight == ServerSettings.max_in_flight
    assert settings.workers >= 1
    assert not settings.serves_feast_path("/docs")


def test_feast_endpoints_are_served_only_when_named() -> None:
    named = ServerSettings.from_env({"FEATURE_SERVER_FEAST_ENDPOINTS": " /materialize, /search"})
    assert named.serves_feast_path("/materialize") and named.serves_feast_path("/search")
    assert not named.serves_feast_path("/chat")
    every = ServerSettings.from_env({"FEATURE_SERVER_FEAST_ENDPOINTS": "all"})
    assert every.serves_feast_path("/chat")


def test_values_are_read_from_the_environment() -> None:
    settings = ServerSettings.from_env(
        {
            "FEATURE_SERVER_PORT": "7000",
            "FEATURE_SERVER_WORKERS": "3",
            "FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "0.25",
            "FEATURE_SERVER_DRAIN_SECONDS": "0",
            "FEATURE_SERVER_REQUEST_READ_TIMEOUT_SECONDS": "2.5",
            "FEATURE_SERVER_WRITE_MODE": "token",
            "FEATURE_SERVER_WRITE_TOKEN": "t" * 16,
            "FEATURE_SERVER_MAX_IN_FLIGHT": "12",
            "FEATURE_SERVER_MAX_QUEUE_WAIT_MS": "3",
        }
    )
    assert (settings.port, settings.workers, settings.store_timeout_s) == (7000, 3, 0.25)
    assert (settings.max_in_flight, settings.max_queue_wait_ms) == (12, 3)
    assert (settings.drain_s, settings.request_read_timeout_s) == (0, 2.5)
    assert settings.write_mode == "token"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEATURE_SERVER_PORT": "http"}, "FEATURE_SERVER_PORT must be an integer"),
        ({"FEATURE_SERVER_WORKERS": "0"}, "FEATURE_SERVER_WORKERS must be at least 1"),
        ({"FEATURE_SERVER_STORE_TIMEOUT_SECONDS": "-1"}, "must be positive"),
        ({"FEATURE_SERVER_DRAIN_SECONDS": "-1"}, "FEATURE_SERVER_DRAIN_SECONDS must be at least 0"),
        ({"FEATURE_SERVER_REQUEST_READ_TIMEOUT_SECONDS": "0"}, "must be positive"),
        ({"FEATURE_SERVER_WRITE_MODE": "maybe"}, "must be one of off, token, open"),
        ({"FEATURE_SERVER_WRITE_MODE": "token"}, "needs FEATURE_SERVER_WRITE_TOKEN"),
        ({"FEATURE_SERVER_LOG_FORMAT": "xml"}, "json or text"),
        ({"FEATURE_SERVER_FEAST_ENDPOINTS": "materialize"}, "paths starting with /"),
        ({"FEATURE_SERVER_MAX_IN_FLIGHT": "-1"}, "MAX_IN_FLIGHT must be at least 0"),
        ({"FEATURE_SERVER_MAX_IN_FLIGHT": "many"}, "MAX_IN_FLIGHT must be an integer"),
        ({"FEATURE_SERVER_MAX_QUEUE_WAIT_MS": "-2"}, "MAX_QUEUE_WAIT_MS must be at least 0"),
    ],
)
def test_bad_values_stop_with_the_name(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ServerSettings.from_env(env)


def test_a_short_token_is_refused_without_being_printed() -> None:
    with pytest.raises(ConfigError) as err:
        ServerSettings.from_env(
            {"FEATURE_SERVER_WRITE_MODE": "token", "FEATURE_SERVER_WRITE_TOKEN": "hunter2"}
        )
    assert "hunter2" not in str(err.value)


def test_zero_turns_the_bound_off() -> None:
    assert ServerSettings.from_env({"FEATURE_SERVER_MAX_IN_FLIGHT": "0"}).max_in_flight == 0
