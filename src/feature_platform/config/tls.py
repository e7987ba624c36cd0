"""TLS for the platform's servers and clients, from environment variables.

Servers (feature server, registry server gRPC and REST, offline server, UI), one pod one
server, so one pair of files:

- `TLS_CERT_FILE`: the server's certificate chain (PEM), leaf first.
- `TLS_KEY_FILE`: its private key (PEM, unencrypted).

Both set: the server speaks TLS only (no plaintext listener beside it). Both empty: plain
TCP, as on a laptop. One without the other refuses to start.

Clients the platform ships (the skew check, the test helpers, the thin-client file):

- `TLS_CA_FILE`: the CA bundle (PEM) the servers' certificates are verified against;
  empty means the system's trust store. Hostnames are always checked.

The stores have their own settings, read by feature_store.yaml: `REDIS_SSL` with
`REDIS_TLS_OPTIONS` (`,ssl_ca_certs=<CA file>`), and `POSTGRES_SSLMODE` with
`POSTGRES_SSLROOTCERT` (the CA file for `verify-full`).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from feature_platform.config.guard import ConfigError

CERT_VAR = "TLS_CERT_FILE"
KEY_VAR = "TLS_KEY_FILE"
CA_VAR = "TLS_CA_FILE"


def _readable(name: str, path: str) -> str:
    if not Path(path).is_file() or not os.access(path, os.R_OK):
        raise ConfigError(f"{name} names {path!r}, which is not a readable file")
    return path


@dataclass(frozen=True)
class ServerTls:
    """The certificate and key a server presents."""

    cert_file: str
    key_file: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerTls | None:
        """None when neither is set; a ConfigError when only one is, or a file is missing."""
        env = os.environ if env is None else env
        cert, key = env.get(CERT_VAR, "").strip(), env.get(KEY_VAR, "").strip()
        if not cert and not key:
            return None
        if not cert or not key:
            missing = CERT_VAR if not cert else KEY_VAR
            raise ConfigError(f"{CERT_VAR} and {KEY_VAR} go together: {missing} is empty")
        tls = cls(_readable(CERT_VAR, cert), _readable(KEY_VAR, key))
        tls.context()  # a key that does not match the certificate fails here, not per call
        return tls

    def cert_pem(self) -> bytes:
        return Path(self.cert_file).read_bytes()

    def key_pem(self) -> bytes:
        return Path(self.key_file).read_bytes()

    def context(self) -> ssl.SSLContext:
        """A server context: TLS 1.2 at least."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{CERT_VAR} and {KEY_VAR} do not make a usable pair: {exc.reason}"
            ) from None
        return context

    def grpc_credentials(self) -> object:
        import grpc

        return grpc.ssl_server_credentials([(self.key_pem(), self.cert_pem())])

    def flight_certificates(self) -> list[object]:
        import pyarrow.flight as fl

        return [fl.CertKeyPair(cert=self.cert_pem(), key=self.key_pem())]


def server_tls(env: Mapping[str, str] | None = None) -> ServerTls | None:
    return ServerTls.from_env(env)


def ca_file(env: Mapping[str, str] | None = None) -> str | None:
    """The CA bundle clients verify servers against; None: the system's trust store."""
    env = os.environ if env is None else env
    path = env.get(CA_VAR, "").strip()
    return _readable(CA_VAR, path) if path else None


def requests_verify(env: Mapping[str, str] | None = None) -> str | bool:
    """`verify=` for requests: the CA file, else True (never False)."""
    return ca_file(env) or True


def scheme(env: Mapping[str, str] | None = None) -> str:
    """http or https, as this process's server listens."""
    return "https" if ServerTls.from_env(env) else "http"


def system_ca_file() -> str:
    """The CA bundle requests trusts by default (certifi's), for clients that need a file."""
    import certifi

    return str(certifi.where())
