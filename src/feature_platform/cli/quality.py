"""`feature-platform quarantine`: the rows set aside for breaking their view's
expectations, newest first, as JSON (`quality/quarantine.py` reads them)."""

from __future__ import annotations

import json

from feature_platform.cli.rollouts import guarded
from feature_platform.config import feast_commands
from feature_platform.console import Say
from feature_platform.errors import EXIT_OK
from feature_platform.quality import quarantine


def cli_quarantine(env: str, view: str | None, limit: int, say: Say) -> int:
    def body() -> int:
        target = quarantine.for_settings(feast_commands.prepare(env))
        entries = quarantine.read(target, view, limit)
        print(json.dumps(entries, indent=2, default=str))
        say(f"{env}: {len(entries)} quarantined row(s)" + (f" of {view}" if view else ""))
        return EXIT_OK

    return guarded("quarantine", say, body)
