"""`feature-platform forget ENV --entity KEY=VALUE`: an entity's values out of every
place (`erasure/forget.py`), a dry run unless `--yes`; the report as JSON on stdout.
`feature-platform forget-log ENV`: the recorded runs, newest first."""

from __future__ import annotations

import getpass
import json

from feature_platform.cli.rollouts import guarded
from feature_platform.config import feast_commands
from feature_platform.console import Say
from feature_platform.erasure import forget
from feature_platform.errors import EXIT_OK
from feature_platform.feast_seam import registry as feast_registry
from feature_platform.quality import database as quality_db


def cli_forget(
    env: str,
    pairs: list[str],
    yes: bool,
    requested_by: str | None,
    settle_s: float | None,
    say: Say,
) -> int:
    settings = feast_commands.prepare(env)
    store = feast_commands.open_store(env)

    def body() -> int:
        entity = forget.parse_entity(store, pairs)
        who = requested_by or getpass.getuser()
        said = ", ".join(f"{k}={v}" for k, v in entity.items())
        say(f"{env}: forgetting {said}" if yes else
            f"{env}: dry run for {said} (--yes removes what it finds)")  # fmt: skip
        report = forget.forget(env, store, settings, entity, who, yes, say, settle_s)
        print(json.dumps(report.as_json(), indent=2, default=str))
        for named in report.training_sets:
            holds = "holds it" if named["holds"] else "may hold it (its file is not here)"
            say(f"  training set {named['name']} of {named['created_at']} {holds}: "
                "it cannot be recalled; retrain without it")  # fmt: skip
        total = sum(place.rows for place in report.places)
        say(f"{env}: {total:,} row(s) {'removed; recorded in ' + forget.AUDIT if yes else 'found'}")
        return EXIT_OK

    try:
        return guarded("forget", say, body)
    finally:
        feast_registry.release(store)


def cli_forget_log(env: str, limit: int, say: Say) -> int:
    def body() -> int:
        runs = forget.audit_log(quality_db.for_settings(feast_commands.prepare(env)), limit)
        print(json.dumps(runs, indent=2, default=str))
        say(f"{env}: {len(runs)} forget run(s)")
        return EXIT_OK

    return guarded("forget-log", say, body)
