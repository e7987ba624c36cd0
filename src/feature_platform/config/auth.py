"""Identity settings from the environment, and the Feast `auth:` block derived from them.

One source for every server and client: `AUTH_TYPE` (no_auth, oidc, kubernetes) and, for
OIDC, `OIDC_DISCOVERY_URL`, `OIDC_CLIENT_ID`, `OIDC_AUDIENCE`, `OIDC_ISSUER`. The derived
block reaches feature_store.yaml as `auth: ${FEAST_AUTH}` (a JSON flow mapping), so Feast's
own servers and clients read the same configuration as the platform's verifier.

Refused at start, with one line naming the problem:
- `oidc` without audience and issuer (Feast then skips verifying `aud` and `iss`);
- `no_auth` unless `AUTH_ALLOW_NO_AUTH=true` (dev and local say so in their env files;
  prod does not, so prod cannot fall back to anonymous access by a missing value);
- `INTRA_COMMUNICATION_BASE64` set at all: Feast accepts any unsigned token whose
  `preferred_username` equals it and skips every permission for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from feature_platform.config.guard import ConfigError, flag, positive_number

AUTH_TYPES = ("no_auth", "oidc", "kubernetes")
FEAST_AUTH_VAR = "FEAST_AUTH"
INTRA_COMMUNICATION_VAR = "INTRA_COMMUNICATION_BASE64"
OIDC_REQUIRED = ("OIDC_DISCOVERY_URL", "OIDC_CLIENT_ID", "OIDC_AUDIENCE", "OIDC_ISSUER")


@dataclass(frozen=True)
class AuthSettings:
    type: str = "no_auth"
    discovery_url: str = ""
    client_id: str = ""
    audience: str = ""
    issuer: str = ""
    # CA bundle the verifier trusts for the identity provider's TLS ("" = the system's).
    ca_file: str = ""
    # Every fetch from the identity provider or the Kubernetes API ends within this.
    fetch_timeout_s: float = 2.0
    # Signing keys are refetched this often, in the background.
    keys_cache_s: float = 300.0

    @property
    def enabled(self) -> bool:
        return self.type != "no_auth"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> AuthSettings:
        env = os.environ if env is None else env
        if env.get(INTRA_COMMUNICATION_VAR):
            raise ConfigError(
                f"{INTRA_COMMUNICATION_VAR} is set: Feast would accept any unsigned token "
                "naming it and skip every permission; unset it"
            )
        auth_type = env.get("AUTH_TYPE", "") or "no_auth"
        if auth_type not in AUTH_TYPES:
            raise ConfigError(
                f"AUTH_TYPE must be one of {', '.join(AUTH_TYPES)}, got {auth_type!r}"
            )
        if auth_type == "no_auth" and not flag(env, "AUTH_ALLOW_NO_AUTH"):
            raise ConfigError(
                "AUTH_TYPE=no_auth lets anyone who reaches a server read and write: set "
                "AUTH_TYPE=oidc or kubernetes, or AUTH_ALLOW_NO_AUTH=true to mean it"
            )
        settings = cls(
            type=auth_type,
            discovery_url=env.get("OIDC_DISCOVERY_URL", "").strip(),
            client_id=env.get("OIDC_CLIENT_ID", "").strip(),
            audience=env.get("OIDC_AUDIENCE", "").strip(),
            issuer=env.get("OIDC_ISSUER", "").strip(),
            ca_file=env.get("OIDC_CA_FILE", "").strip(),
            fetch_timeout_s=positive_number(env, "AUTH_FETCH_TIMEOUT_SECONDS", cls.fetch_timeout_s),
            keys_cache_s=positive_number(env, "AUTH_KEYS_CACHE_SECONDS", cls.keys_cache_s),
        )
        if auth_type == "oidc":
            missing = [name for name in OIDC_REQUIRED if not env.get(name, "").strip()]
            if missing:
                raise ConfigError(
                    f"AUTH_TYPE=oidc needs {', '.join(missing)}: without an audience and "
                    "an issuer a token minted for another service would be accepted"
                )
            parts = urlsplit(settings.discovery_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(
                    f"OIDC_DISCOVERY_URL must be an http(s) URL, got {settings.discovery_url!r}"
                )
        return settings

    @classmethod
    def from_feast(cls, auth_config: Any) -> AuthSettings:
        """The settings a store's `auth:` block carries (what FEAST_AUTH put there), so a
        server verifies exactly what its Feast configuration says. An OIDC block without
        audience or issuer verifies against empty ones: every token is refused."""
        if os.environ.get(INTRA_COMMUNICATION_VAR):
            raise ConfigError(
                f"{INTRA_COMMUNICATION_VAR} is set: Feast would accept any unsigned token "
                "naming it and skip every permission; unset it"
            )
        auth_type = getattr(auth_config, "type", "no_auth") or "no_auth"
        if auth_type != "oidc":
            timeout = getattr(auth_config, "request_timeout_seconds", None)
            return cls(type=auth_type, fetch_timeout_s=float(timeout or cls.fetch_timeout_s))
        return cls(
            type="oidc",
            discovery_url=auth_config.auth_discovery_url or "",
            client_id=auth_config.client_id or "",
            audience=auth_config.audience or "",
            issuer=auth_config.issuer or "",
            ca_file=auth_config.ca_cert_path or "",
            fetch_timeout_s=float(auth_config.jwks_request_timeout_seconds),
            keys_cache_s=float(auth_config.jwks_cache_lifespan_seconds),
        )

    def feast_block(self) -> dict[str, object]:
        """Feast's `auth:` block for these settings (feast.permissions.auth_model)."""
        if self.type == "oidc":
            block: dict[str, object] = {
                "type": "oidc",
                "auth_discovery_url": self.discovery_url,
                "client_id": self.client_id,
                "audience": self.audience,
                "issuer": self.issuer,
                "jwks_cache_lifespan_seconds": max(1, int(self.keys_cache_s)),
                "jwks_request_timeout_seconds": self.fetch_timeout_s,
            }
            if self.ca_file:
                block["ca_cert_path"] = self.ca_file
            return block
        if self.type == "kubernetes":
            # Feast's Kubernetes block takes extra keys; the TokenReview deadline travels here
            return {"type": "kubernetes", "request_timeout_seconds": self.fetch_timeout_s}
        return {"type": self.type}


def feast_auth(env: Mapping[str, str]) -> str:
    """FEAST_AUTH for `env`: Feast's block as one line of JSON, which YAML reads as a
    flow mapping. ConfigError if the settings are refused."""
    return json.dumps(AuthSettings.from_env(env).feast_block(), separators=(", ", ": "))
