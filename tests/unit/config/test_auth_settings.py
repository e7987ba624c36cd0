"""Identity settings: what is refused at start, and the Feast block derived from them."""

from __future__ import annotations

import json

import pytest
import yaml
from feast.permissions.auth_model import OidcAuthConfig

from feature_platform.config import environments
from feature_platform.config.auth import AuthSettings, feast_auth
from feature_platform.config.guard import ConfigError
from feature_platform.serving.settings import ServerSettings

OIDC = {
    "AUTH_TYPE": "oidc",
    "OIDC_DISCOVERY_URL": "https://idp.test/realms/x/.well-known/openid-configuration",
    "OIDC_CLIENT_ID": "feast",
    "OIDC_AUDIENCE": "feast-api",
    "OIDC_ISSUER": "https://idp.test/realms/x",
}


@pytest.mark.parametrize(
    "missing", ["OIDC_DISCOVERY_URL", "OIDC_CLIENT_ID", "OIDC_AUDIENCE", "OIDC_ISSUER"]
)
def test_oidc_needs_every_setting_and_names_the_missing_one(missing: str) -> None:
    env = {k: v for k, v in OIDC.items() if k != missing}
    with pytest.raises(ConfigError) as err:
        AuthSettings.from_env(env)
    assert missing in str(err.value)


def test_no_auth_is_refused_unless_meant() -> None:
    with pytest.raises(ConfigError, match="AUTH_ALLOW_NO_AUTH=true"):
        AuthSettings.from_env({"AUTH_TYPE": "no_auth"})
    with pytest.raises(ConfigError, match="AUTH_ALLOW_NO_AUTH"):
        AuthSettings.from_env({})
    assert not AuthSettings.from_env({"AUTH_ALLOW_NO_AUTH": "true"}).enabled


def test_intra_communication_secret_is_refused_whatever_the_type() -> None:
    for env in (OIDC, {"AUTH_TYPE": "no_auth", "AUTH_ALLOW_NO_AUTH": "true"}):
        with pytest.raises(ConfigError, match="INTRA_COMMUNICATION_BASE64") as err:
            AuthSettings.from_env({**env, "INTRA_COMMUNICATION_BASE64": "c2VjcmV0"})
        assert "c2VjcmV0" not in str(err.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUTH_TYPE", "ldap"), ("AUTH_FETCH_TIMEOUT_SECONDS", "0"), ("AUTH_KEYS_CACHE_SECONDS", "x")],
)
def test_bad_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        AuthSettings.from_env({**OIDC, name: value})


def test_feast_reads_the_derived_block_with_audience_and_issuer_checked() -> None:
    block = yaml.safe_load(f"auth: {feast_auth({**OIDC, 'AUTH_FETCH_TIMEOUT_SECONDS': '1.5'})}")
    config = OidcAuthConfig(**block["auth"])
    assert (config.audience, config.issuer) == ("feast-api", "https://idp.test/realms/x")
    assert config.client_id == "feast"
    assert config.jwks_request_timeout_seconds == 1.5


def test_environments_derive_feast_auth_and_prod_runs_with_identities() -> None:
    dev = environments.settings("dev", {})
    assert json.loads(dev["FEAST_AUTH"]) == {"type": "no_auth"}
    prod = environments.settings("prod", {})
    assert json.loads(prod["FEAST_AUTH"])["type"] == "oidc"
    # prod's env file says oidc; taking it back to no_auth needs the explicit value
    with pytest.raises(ConfigError, match="AUTH_ALLOW_NO_AUTH"):
        environments.settings("prod", {"AUTH_TYPE": "no_auth"})
    # a FEAST_AUTH given by hand is replaced by the derived one
    forced = environments.settings("dev", {"FEAST_AUTH": '{"type": "oidc"}'})
    assert json.loads(forced["FEAST_AUTH"]) == {"type": "no_auth"}


def test_the_shared_write_token_is_refused_with_identities() -> None:
    token = {"FEATURE_SERVER_WRITE_MODE": "token", "FEATURE_SERVER_WRITE_TOKEN": "x" * 32}
    assert ServerSettings.from_env(token).write_mode == "token"
    with pytest.raises(ConfigError, match="only with AUTH_TYPE=no_auth"):
        ServerSettings.from_env({**token, **OIDC})
    assert (
        ServerSettings.from_env({**OIDC, "FEATURE_SERVER_WRITE_MODE": "open"}).write_mode == "open"
    )
