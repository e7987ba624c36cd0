"""The one printer: progress and errors go to stderr, one line each, at once; stdout is
left for what a command produces (a plan, a configuration file)."""

from __future__ import annotations

import sys
from collections.abc import Callable

# What long-running work is given to report progress with.
Say = Callable[[str], None]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
