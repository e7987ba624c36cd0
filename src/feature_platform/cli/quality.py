"""`feature-platform quarantine`: the rows set aside for breaking their view's
expectations, newest first, as JSON (`quality/quarantine.py` reads them).
`feature-platform quality`: every feature's drift, to an HTML report and JSON on stdout
(`quality/monitor.py`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from feature_platform.cli.rollouts import guarded
from feature_platform.config import feast_commands
from feature_platform.config.urls import http_url, shown
from feature_platform.console import Say
from feature_platform.errors import EXIT_BAD_INPUT, EXIT_OK
from feature_platform.quality import database as quality_db
from feature_platform.quality import history, metrics, monitor, quarantine, report


def cli_quarantine(env: str, view: str | None, limit: int, say: Say) -> int:
    def body() -> int:
        target = quality_db.for_settings(feast_commands.prepare(env))
        entries = quarantine.read(target, view, limit)
        print(json.dumps(entries, indent=2, default=str))
        say(f"{env}: {len(entries)} quarantined row(s)" + (f" of {view}" if view else ""))
        return EXIT_OK

    return guarded("quarantine", say, body)


def cli_training_sets(env: str, name: str | None, limit: int, say: Say) -> int:
    def body() -> int:
        target = quality_db.for_settings(feast_commands.prepare(env))
        found = history.training_sets(target, name, limit)
        print(json.dumps([asdict(t) for t in found], indent=2, default=str))
        say(f"{env}: {len(found)} training set(s)" + (f" named {name}" if name else ""))
        return EXIT_OK

    return guarded("training-sets", say, body)


def cli_drift(
    env: str,
    training_set: str | None,
    current_hours: int,
    baseline_days: int,
    report_file: Path,
    pushgateway: str | None,
    served_vectors: str | None,
    keep_served_days: int | None,
    say: Say,
) -> int:
    settings = feast_commands.prepare(env)
    gateway_value = pushgateway or settings.get(metrics.PUSHGATEWAY_URL_VAR, "")
    gateway = (
        http_url(gateway_value, "Pushgateway", metrics.PUSHGATEWAY_URL_VAR, "--pushgateway")
        if gateway_value.strip()
        else None
    )

    target = quality_db.for_settings(settings)

    def body() -> int:
        reference = _training_set(target, training_set) if training_set else None
        if training_set and reference is None:
            say(f"quality: no training set named or at {training_set}")
            return EXIT_BAD_INPUT
        current, baseline = monitor.windows(
            datetime.now(UTC), timedelta(hours=current_hours), timedelta(days=baseline_days)
        )
        store = feast_commands.open_store(env)
        what = "served vectors" if served_vectors else "offline rows"
        say(f"{env}: drift of the {what} {current}")
        run: monitor.Run | None = None
        try:
            run = monitor.run(store, current, baseline, reference, say, served_vectors)
        finally:
            # A failed run is pushed too: its success 0 is what the alert reads.
            if gateway is not None:
                metrics.push(gateway, env, run)
                say(f"pushed the result to {shown(gateway)} (job {metrics.PUSH_JOB})")
        history.record_run(target, env, run, datetime.now(UTC))
        if served_vectors and keep_served_days is not None:
            before = datetime.now(UTC) - timedelta(days=keep_served_days)
            pruned = monitor.prune_served(store, served_vectors, before)
            if pruned is not None:
                say(f"deleted {pruned:,} served vector(s) older than {keep_served_days} day(s)")
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text(report.html(run))
        print(json.dumps(monitor.summary(run), indent=2))
        for compared in run.compared:
            if compared.result.drifted:
                main = compared.result.main
                said = ", ".join(
                    f"{s.test} {s.value:.3g}" for s in compared.result.scores if s.drifted
                )
                say(f"  drifted: {compared.view}.{compared.result.feature} ({said}; "
                    f"{main.test} threshold {main.threshold:g})")  # fmt: skip
        say(
            f"{env}: {len(run.drifted)} of {len(run.compared)} feature(s) drifted; "
            f"report: {report_file}"
        )
        return EXIT_OK

    return guarded("quality", say, body)


def _training_set(target: quality_db.Target, given: str) -> monitor.Reference | None:
    """A parquet file, or the sample recorded with the newest training set of that name
    (the same wherever the check runs; the file is on the training job's volume)."""
    if Path(given).is_file():
        return monitor.Reference(f"training set {given}", pd.read_parquet(given))
    found = history.training_set_sample(target, given)
    if found is None:
        return None
    recorded, sample = found
    return monitor.Reference(
        f"training set {given!r} of {recorded.created_at:%Y-%m-%d %H:%M} UTC "
        f"({len(sample):,} of its {recorded.rows:,} rows)",
        sample,
    )
