"""The training-set command starts without modules it does not use on its path: each
costs every run its import time (scipy alone most of a second), so none may come back
through an import that looks harmless."""

from __future__ import annotations

import subprocess
import sys

# Imported as the command imports itself (`feature-platform training-set`).
COMMAND = (
    "import sys; "
    "from feature_platform.feast_seam import patches; patches.import_feast_unchecked(); "
    "import feature_platform.cli.training_set; "
    "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
)
# the drift tests' scipy; the binary copy's driver, loaded by a whole copy only
NOT_ON_THE_PATH = {"scipy", "adbc_driver_postgresql", "adbc_driver_manager"}


def _loaded(code: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_training_set_command_imports_neither_scipy_nor_the_copy_driver() -> None:
    loaded = _loaded(COMMAND)
    assert "feature_platform" in loaded
    assert loaded & NOT_ON_THE_PATH == set()


def test_the_check_sees_what_the_quality_monitor_imports() -> None:
    # The same check over the drift monitor, which does use scipy: it would not pass.
    loaded = _loaded(COMMAND.replace("cli.training_set", "quality.monitor"))
    assert "scipy" in loaded
