"""How many CPUs each training-set Ray task asks for (`ray_engine.cpus_per_task`)."""

from __future__ import annotations

from typing import Any

import pytest

from feature_platform.training import ray_engine


def _nodes(*cpus: int, dead: int = 0) -> list[dict[str, Any]]:
    live = [{"Alive": True, "Resources": {"CPU": float(n)}} for n in cpus]
    return live + [{"Alive": False, "Resources": {"CPU": 64.0}}] * dead


@pytest.mark.parametrize(
    ("nodes", "tasks", "cpus"),
    [
        (_nodes(2), 1, 2),  # one task on this machine: both cores, as `fast` in process
        (_nodes(2), 2, 1),
        (_nodes(2), 5, 1),  # more tasks than CPUs: Ray queues them, one CPU each
        (_nodes(4, 4, 4), 3, 4),
        (_nodes(4, 4, 4), 6, 2),
        # Never more than the largest node: a task asking for more is never scheduled.
        (_nodes(2, 2, 2, 2), 1, 2),
        (_nodes(2, dead=3), 1, 2),  # dead nodes count for nothing
        (_nodes(0, 8), 1, 8),  # a head node without CPUs for tasks
    ],
)
def test_tasks_share_the_live_cpus_within_one_node(
    nodes: list[dict[str, Any]], tasks: int, cpus: int
) -> None:
    assert ray_engine.cpus_per_task(nodes, tasks) == cpus
