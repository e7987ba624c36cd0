"""TLS for the platform's servers and clients, from environment variables.

Servers (feature server, registry server gRPC and REST, offline server, UI), one pod one
server, so one pair of files:

- `TLS_CERT_FILE`: the server's certificate chain (PEM), leaf first.
- `TLS_KEY_FILE`: its private key (PEM, unencrypted).

Both set: the server speaks TLS only (no plaintext listener beside it). Both empty: plain
TCP, as on a laptop. One without the other refuses to start.

The servers follow the files: a handshake after they changed (a renewed certificate, the
mounted Secret updated in place) presents the new pair, with no restart and no connection
dropped (`followed_context` for the HTTP servers, `grpc_credentials` for gRPC). A new pair
that does not load leaves the old one in use, with one warning. Arrow Flight (the offline
server) reads them once: the chart rolls its pods when the Secret changes.

Clients the platform ships (the skew check, the test helpers, the thin-client file):

- `TLS_CA_FILE`: the CA bundle (PEM) the servers' certificates are verified against;
  empty means the system's trust store. Hostnames are always checked.

The stores have their own settings, read by feature_store.yaml: `REDIS_SSL` with
`REDIS_TLS_OPTIONS` (`,ssl_ca_certs=<CA file>`), and `POSTGRES_SSLMODE` with
`POSTGRES_SSLROOTCERT` (the CA file for `verify-full`).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from feature_platform.config.guard import ConfigError

log = logging.getLogger("feature_platform.tls")

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

    def signature(self) -> tuple[tuple[int, int, int, int], ...]:
        """What changes when either file is replaced or rewritten."""
        stats = [os.stat(path) for path in (self.cert_file, self.key_file)]
        return tuple((s.st_dev, s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def followed_context(self) -> ssl.SSLContext:
        """`context()`, whose handshakes present the files' pair of the moment: each one
        looks at the files (two stats) and, once they changed, loads them again."""
        context = self.context()
        context.sni_callback = _Follower(self, context)
        return context

    def uvicorn_options(self) -> dict[str, Any]:
        """uvicorn.Config's TLS arguments: the followed context."""
        return {"ssl_context_factory": lambda _config, _default: self.followed_context()}

    def grpc_credentials(self) -> object:
        """gRPC server credentials that gRPC asks for the pair again at each handshake."""
        import grpc

        def configuration() -> object:
            return grpc.ssl_server_certificate_configuration([(self.key_pem(), self.cert_pem())])

        follower = _Follower(self, None)

        def fetch() -> object:
            return configuration() if follower.changed() else None

        return grpc.dynamic_ssl_server_credentials(configuration(), fetch)

    def flight_certificates(self) -> list[object]:
        import pyarrow.flight as fl

        return [fl.CertKeyPair(cert=self.cert_pem(), key=self.key_pem())]


class _Follower:
    """Whether a server's files changed since its pair was loaded; as an SSLContext's
    `sni_callback` (called in every handshake, SNI or not), the handshake is moved to the
    context of the pair now on disk."""

    def __init__(self, tls: ServerTls, context: ssl.SSLContext | None) -> None:
        self.tls = tls
        self.context = context
        self.loaded = tls.signature()

    def changed(self) -> bool:
        """True once for each change to a pair that loads (a loaded pair is a matching
        one); a pair that does not load is warned about once and skipped."""
        try:
            seen = self.tls.signature()
        except OSError:
            return False  # a file being replaced: the next handshake looks again
        if seen == self.loaded:
            return False
        self.loaded = seen
        try:
            context = self.tls.context()
        except (OSError, ConfigError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            log.warning("the changed TLS certificate files are not used: %s", reason)
            return False
        if self.context is not None:
            self.context = context
        log.info("TLS certificate files changed: new connections get the new certificate")
        return True

    def __call__(self, connection: Any, _server_name: str | None, initial: ssl.SSLContext) -> None:
        self.changed()
        if self.context is not None and self.context is not initial:
            connection.context = self.context


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
