"""The recovery commands: `registry-backup` and `registry-restore`.

Exit codes: 0 done; 2 configuration, a damaged backup file, another environment's, or a
database to restore into that is not empty (without --replace); 1 anything else (the
database unreachable, the apply lock not granted in time), each failure one line without
secrets.
"""

from __future__ import annotations

from pathlib import Path

from feature_platform.cli.rollouts import guarded
from feature_platform.console import Say
from feature_platform.errors import EXIT_OK
from feature_platform.recovery.backup_file import BadBackup
from feature_platform.recovery.registry_backup import NotEmpty, backup, restore


def cli_backup(env: str, output: Path, retain: int | None, say: Say) -> int:
    def body() -> int:
        done = backup(env, output, retain, say)
        # The file written, for scripts: FILE=$(feature-platform registry-backup ...).
        print(done.path, flush=True)
        return EXIT_OK

    return guarded("registry-backup", say, body)


def cli_restore(env: str, source: Path, replace: bool, say: Say) -> int:
    def body() -> int:
        restored = restore(env, source, replace, say)
        say(
            f"next: `feature-platform plan {env}` (apply if the repository changed since "
            f"{restored.summary.header.get('snapshot_at')}), then `feature-platform "
            f"materialize {env}`: it loads the rows created since the snapshot"
        )
        return EXIT_OK

    return guarded("registry-restore", say, body, bad_input=(BadBackup, NotEmpty))
