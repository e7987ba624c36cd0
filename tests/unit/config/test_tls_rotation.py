"""Servers follow their certificate files (config/tls.py): a handshake after the files
changed presents the new pair, a pair that does not load leaves the old one in use; for
the HTTP servers (an SSLContext) and for gRPC (the registry server), with real handshakes
on loopback."""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from feature_platform.config.tls import ServerTls


class Files:
    """A certificate and key, replaced in one rename each, as a renewal writes them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.tls = ServerTls(str(directory / "tls.crt"), str(directory / "tls.key"))

    def issue(self, ca: trustme.CA) -> bytes:
        """A new pair of `ca` in place; its certificate's DER."""
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        self.put(leaf.private_key_pem.bytes(), "tls.key")
        self.put(b"".join(b.bytes() for b in leaf.cert_chain_pems), "tls.crt")
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())

    def put(self, data: bytes, name: str) -> None:
        staged = self.directory / f".{name}.new"
        staged.write_bytes(data)
        os.replace(staged, self.directory / name)


def _served(port: int, ca: trustme.CA) -> bytes:
    """The certificate a new connection is presented, verified against `ca` only."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return der


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[Files, int]]:
    """A TLS server on the followed context, answering each connection with its handshake."""
    files = Files(tmp_path)
    files.issue(trustme.CA())
    context = files.tls.followed_context()
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield files, listener.getsockname()[1]
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_a_handshake_after_a_renewal_presents_the_new_certificate(
    https: tuple[Files, int],
) -> None:
    files, port = https
    old_ca, new_ca = trustme.CA(), trustme.CA()
    old = files.issue(old_ca)
    assert _served(port, old_ca) == old
    new = files.issue(new_ca)
    assert _served(port, new_ca) == new
    with pytest.raises(ssl.SSLCertVerificationError):
        _served(port, old_ca)


def test_a_pair_that_does_not_load_leaves_the_old_one_in_use(
    https: tuple[Files, int], caplog: pytest.LogCaptureFixture
) -> None:
    files, port = https
    ca = trustme.CA()
    kept = files.issue(ca)
    assert _served(port, ca) == kept
    # a key of another certificate: half a renewal
    stray = trustme.CA().issue_cert("127.0.0.1")
    with caplog.at_level(logging.WARNING, logger="feature_platform.tls"):
        files.put(stray.private_key_pem.bytes(), "tls.key")
        assert _served(port, ca) == kept
        assert _served(port, ca) == kept
    assert len(caplog.records) == 1 and "not used" in caplog.text
    renewed = files.issue(ca)
    assert _served(port, ca) == renewed


def test_grpc_presents_the_renewed_certificate_on_new_connections(tmp_path: Path) -> None:
    files = Files(tmp_path)
    old_ca, new_ca = trustme.CA(), trustme.CA()
    files.issue(old_ca)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_secure_port("127.0.0.1:0", files.tls.grpc_credentials())
    server.start()

    def serving(ca: trustme.CA) -> bool:
        credentials = grpc.ssl_channel_credentials(ca.cert_pem.bytes())
        with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    try:
        assert serving(old_ca) and not serving(new_ca)
        files.issue(new_ca)
        assert serving(new_ca) and not serving(old_ca)
    finally:
        server.stop(0).wait()
