"""Foreground life of a server process: run until SIGTERM or SIGINT, then stop cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from feature_platform.console import Say

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def run_until_signalled(stop: Callable[[], None], say: Say) -> None:
    """Block the main thread until a stop signal, then call `stop`.

    The servers run in their own threads; the kubelet's SIGTERM (or Ctrl-C) reaches this
    process itself, so stopping the command stops the server, and nothing is left behind.
    """
    stopping = threading.Event()
    received: list[str] = []

    def handle(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        stopping.set()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        while not stopping.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    say(f"{received[0] if received else 'stop'} received: stopping")
    stop()
