"""Shutdown without lost requests: drain first, then close the listener without resets.

On SIGTERM the gunicorn master (runner.py) sets the drain flag, shared with its forked
workers through anonymous shared memory. While it is set, `/ready` answers 503 and every
response carries `Connection: close`, so load balancers take the pod out and keep-alive
clients reconnect elsewhere, while the server still answers everything. When the drain
ends, `stop_accepting` makes the kernel drop new connection attempts, so none is queued
and then reset: the client's next attempt finds the port closed (connection refused).
Connections already queued are left for the workers to accept and answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import socket
import struct
import sys
import time
from collections.abc import Iterable

# Created at import in the master, before the workers fork, so they share the page.
_drain_flag = mmap.mmap(-1, 1)

_SO_ATTACH_FILTER = 26  # Linux; not exported by the socket module
_DROP_ALL = struct.pack("HBBI", 0x06, 0, 0, 0)  # classic BPF: return 0, keep no packet
_TCP_INFO_UNACKED = 24  # offset of tcpi_unacked: the accept queue length of a listener


def draining() -> bool:
    return _drain_flag[0] == 1


def start_draining() -> None:
    _drain_flag[0] = 1


def stop_accepting(listeners: Iterable[socket.socket], settle_s: float = 0.2) -> None:
    """Drop new connection attempts, then wait (at most a second) until the workers have
    accepted every queued connection, and `settle_s` more for their requests to arrive."""
    if not sys.platform.startswith("linux"):
        return
    listeners = list(listeners)
    program = ctypes.create_string_buffer(_DROP_ALL)
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    for listener in listeners:
        with contextlib.suppress(OSError):
            listener.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline and any(_queued(sock) for sock in listeners):
        time.sleep(0.01)
    time.sleep(settle_s)


def _queued(listener: socket.socket) -> int:
    if listener.family not in (socket.AF_INET, socket.AF_INET6):
        return 0
    info = listener.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, _TCP_INFO_UNACKED)[0])
