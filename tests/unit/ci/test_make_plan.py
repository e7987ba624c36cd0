"""`make plan` ends with make's own 2 on any failure; it names ci/plan.sh's code."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_make_plan_names_the_exit_code_of_ci_plan() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "plan", "ENV=staging"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "unknown environment 'staging'" in result.stderr
    assert "ci/plan.sh exited 2 (3: breaking change, 2: configuration error" in result.stderr
