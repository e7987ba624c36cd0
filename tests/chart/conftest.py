"""Chart tier: the chart rendered once per values scenario, shared by every test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from rendering import SCENARIOS, rendered_scenario

# The integration tier's isolated stacks, for the chart-to-process tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))


@pytest.fixture(params=sorted(SCENARIOS))
def scenario(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def objects(scenario: str) -> list[dict[str, Any]]:
    return rendered_scenario(scenario)
