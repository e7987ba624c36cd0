"""HTTP/1.1 details clients send that the server must take in stride.

Java's built-in HttpClient asks every plain-http request to upgrade to HTTP/2
(`Connection: Upgrade, HTTP2-Settings`, `Upgrade: h2c`). The server does not speak h2c,
so it must answer in HTTP/1.1 with the request's body intact, and keep the connection
usable for the next request.
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

from feature_platform.devtools.launcher import FeatureServer

BODY = json.dumps(
    {
        "feature_service": "fraud_detection_v1",
        "entities": {"customer_id": [1, 2], "merchant_id": [3, 4], "amount": [25.0, 310.5]},
    }
).encode()
H2C = (
    b"Connection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\n"
    b"HTTP2-Settings: AAEAAEAAAAIAAAABAAMAAABkAAQBAAAAAAUAAEAA\r\n"
)


def _request(host: str, extra_headers: bytes, body: bytes) -> bytes:
    return (
        b"POST /get-online-features HTTP/1.1\r\n"
        + f"Host: {host}\r\n".encode()
        + b"Content-Type: application/json\r\n"
        + extra_headers
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before a response"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed inside a response"
        rest += chunk
    return status, rest[:length]


def _exchange(server: FeatureServer, requests: list[bytes]) -> list[tuple[int, bytes]]:
    """Send each request on one connection, in turn, and read each answer."""
    url = urlsplit(server.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        answers = []
        for request in requests:
            sock.sendall(request)
            answers.append(_read_response(sock))
        return answers


def test_an_h2c_upgrade_request_is_answered_in_http1_with_its_body(
    server_dev: FeatureServer,
) -> None:
    host = urlsplit(server_dev.url).netloc
    [(plain_status, plain)] = _exchange(server_dev, [_request(host, b"", BODY)])
    assert plain_status == 200
    answers = _exchange(server_dev, [_request(host, H2C, BODY), _request(host, b"", BODY)])
    assert answers == [(200, plain), (200, plain)]


def test_an_h2c_upgrade_body_split_across_packets_arrives_whole(
    server_dev: FeatureServer,
) -> None:
    host = urlsplit(server_dev.url).netloc
    request = _request(host, H2C, BODY)
    head_end = request.index(b"\r\n\r\n") + 4
    url = urlsplit(server_dev.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request[: head_end + 10])
        sock.sendall(request[head_end + 10 :])
        status, body = _read_response(sock)
    assert status == 200, body
    assert json.loads(body)["metadata"]["feature_names"][0] == "customer_id"
