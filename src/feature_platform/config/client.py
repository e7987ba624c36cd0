"""The feature_store.yaml of a thin client: Feast's SDK without database or Redis credentials.

Everything goes through the platform's servers: the registry server (gRPC), the offline
server (Arrow Flight) and the feature server (HTTP). The chart renders the same file as
the ConfigMap `<release>-client` (templates/configmap-client.yaml); the chart tests check
that both agree for the same addresses.

Tokens. With identities on the servers (AUTH_TYPE), the file says what Feast's client
sends: `kubernetes`, the pod's service-account token; `oidc`, a token from the identity
provider in an environment variable (FEAST_OIDC_TOKEN, or the one named). Otherwise:
with `auth: no_auth` Feast's clients send no Authorization header at all. The
feature server's writes need its bearer token, so a writing client names an environment
variable holding it: the file then says `type: oidc` with `token_env_var`, Feast's
client-side mechanism that sends `Authorization: Bearer $VAR` on every call (HTTP, gRPC
and Flight) without any identity provider. The registry and offline servers run
`no_auth` and ignore the header; the feature server checks it on writes.

TLS. With `tls` the file says so to each of Feast's clients in its own words: the
registry's `cert` (or `is_tls`), the offline store's `scheme: https` and `cert`, and an
https feature server URL with `cert`. `ca_file` is where the CA bundle is on the client's
machine; without it the registry client needs SSL_CERT_FILE or REQUESTS_CA_BUNDLE, and
the others trust the system's roots.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import yaml

from feature_platform.config import environments
from feature_platform.config.guard import ConfigError

DEFAULT_REGISTRY = "localhost:6570"
DEFAULT_OFFLINE = "localhost:8815"
DEFAULT_ONLINE = "http://localhost:6566"
DEFAULT_ONLINE_TLS = "https://localhost:6566"
OIDC_TOKEN_ENV = "FEAST_OIDC_TOKEN"


@dataclass(frozen=True)
class ClientConfig:
    project: str
    registry: str  # host:port of the registry server's gRPC
    offline_host: str
    offline_port: int
    online: str  # the feature server's URL
    write_token_env: str | None = None
    entity_key_serialization_version: int = 3
    tls: bool = False
    ca_file: str | None = None  # on the client's machine
    # the servers' AUTH_TYPE: what the client must present
    auth_type: str = "no_auth"

    def as_dict(self) -> dict[str, object]:
        auth: dict[str, str] = {"type": "no_auth"}
        if self.auth_type == "kubernetes":
            # Feast's client sends the pod's service-account token
            auth = {"type": "kubernetes"}
        elif self.auth_type == "oidc":
            # a token from the identity provider, in this variable (Feast's default name)
            auth = {"type": "oidc", "token_env_var": self.write_token_env or OIDC_TOKEN_ENV}
        elif self.write_token_env:
            auth = {"type": "oidc", "token_env_var": self.write_token_env}
        registry: dict[str, object] = {"registry_type": "remote", "path": self.registry}
        offline: dict[str, object] = {
            "type": "remote",
            "host": self.offline_host,
            "port": self.offline_port,
        }
        online: dict[str, object] = {"type": "remote", "path": self.online}
        if self.tls:
            registry.update({"cert": self.ca_file} if self.ca_file else {"is_tls": True})
            offline["scheme"] = "https"
            if self.ca_file:
                offline["cert"] = self.ca_file
                online["cert"] = self.ca_file
        return {
            "project": self.project,
            "provider": "local",
            "registry": registry,
            "offline_store": offline,
            "online_store": online,
            "auth": auth,
            "entity_key_serialization_version": self.entity_key_serialization_version,
        }

    def render(self) -> str:
        header = (
            f"# A Feast client of project {self.project}: every call goes through the\n"
            "# platform's servers; this file holds no database or Redis credentials.\n"
        )
        return header + yaml.safe_dump(self.as_dict(), sort_keys=False)


def _host_port(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be host:port, got {text!r}")
    return host, int(port)


def _url(text: str, tls: bool = False) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the feature server must be an http(s) URL, got {text!r}")
    if tls and parts.scheme != "https":
        raise ConfigError(f"with TLS the feature server's URL must be https, got {text!r}")
    return text.rstrip("/")


def for_environment(
    env: str,
    registry: str | None = None,
    offline: str | None = None,
    online: str | None = None,
    write_token_env: str | None = None,
    tls: bool = False,
    ca_file: str | None = None,
) -> ClientConfig:
    """The client file for `env`'s project, at the given addresses (default: localhost);
    TLS on every server when `tls` (implied by `ca_file`, or by an https feature server)."""
    tls = tls or bool(ca_file) or (online or "").startswith("https://")
    server_file = yaml.safe_load(environments.feature_store_yaml(env).read_text())
    registry = registry or DEFAULT_REGISTRY
    _host_port(registry, "the registry server")
    offline_host, offline_port = _host_port(offline or DEFAULT_OFFLINE, "the offline server")
    if write_token_env is not None and not write_token_env.isidentifier():
        raise ConfigError(f"not an environment variable name: {write_token_env!r}")
    return ClientConfig(
        project=server_file["project"],
        registry=registry,
        offline_host=offline_host,
        offline_port=offline_port,
        online=_url(online or (DEFAULT_ONLINE_TLS if tls else DEFAULT_ONLINE), tls),
        write_token_env=write_token_env,
        entity_key_serialization_version=int(
            server_file.get("entity_key_serialization_version", 3)
        ),
        tls=tls,
        ca_file=ca_file or None,
        auth_type=environments.settings(env).get("AUTH_TYPE") or "no_auth",
    )
