"""Permissions in a rollout: planned by the access they take away, applied like the rest.

A registry that serves the repository without permissions (every authenticated caller may
do anything) is the starting point; the repository's permissions.py is then the first
permission set, then edited the way a pull request edits it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from stacks import Stack
from test_rollout import apply_of, change_kinds, ci, plan_of, repo_copy

from feature_platform.rollouts.diff import BREAKING, SAFE

PERMISSIONS = {
    "describe-registry",
    "read-online-views",
    "read-online-services",
    "read-online-fraud-detection-v1",
    "write-online",
    "read-offline",
}


def without_permissions(tmp_path: Path) -> Path:
    repo = repo_copy(tmp_path, "no_permissions", [])
    (repo / "permissions.py").unlink()
    return repo


def _in_block(name: str, old: str, new: str) -> Callable[[str], str]:
    """An edit of the first `old` after the permission named `name`."""

    def edit(text: str) -> str:
        at = text.index(f'name="{name}"')
        return text[:at] + text[at:].replace(old, new, 1)

    return edit


def registry_permissions(stack: Stack) -> set[str]:
    store = stack.store()
    return {p.name for p in store.registry.list_permissions(store.project)}


@pytest.fixture(scope="module")
def full_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repo_copy(tmp_path_factory.mktemp("perm_repos"), "full", [])


@pytest.fixture(scope="module")
def dev(stack_factory: Callable[..., Stack], tmp_path_factory: pytest.TempPathFactory) -> Stack:
    stack = stack_factory("dev", "perm_rollout")
    bare = without_permissions(tmp_path_factory.mktemp("perm_bare"))
    assert apply_of(stack, bare).outcome == "applied"
    assert registry_permissions(stack) == set()
    return stack


def test_the_first_permissions_are_breaking_then_applied_and_stable(
    dev: Stack, full_repo: Path
) -> None:
    planned = plan_of(dev, full_repo)
    assert planned.exit_code == 3
    assert change_kinds(planned) == {("permission", n, "first_permission") for n in PERMISSIONS}

    refused = apply_of(dev, full_repo)
    assert refused.outcome == "refused" and registry_permissions(dev) == set()

    applied = apply_of(dev, full_repo, allow=True)
    assert applied.outcome == "applied"
    assert registry_permissions(dev) == PERMISSIONS
    # What the registry stored reads back equal to the repository's definitions.
    assert plan_of(dev, full_repo).changes == []


EDITS: dict[str, tuple[list[Any], set[tuple[str, str, str]], str]] = {
    "writer_loses_online_reads": (
        [("permissions.py", _in_block("read-online-views", "[READER, WRITER]", "[READER]"))],
        {("permission", "read-online-views", "permission_narrowed")},
        BREAKING,
    ),
    "write_online_deleted": (
        [
            (
                "permissions.py",
                lambda text: re.sub(
                    r"\nwrite_online = Permission\(.*?\n\)\n", "\n", text, flags=re.S
                ),
            )
        ],
        {("permission", "write-online", "permission_deleted")},
        BREAKING,
    ),
    "offline_reads_also_for_readers": (
        [
            (
                "permissions.py",
                "policy=RoleBasedPolicy(roles=[TRAINING]),",
                "policy=RoleBasedPolicy(roles=[TRAINING, READER]),",
            )
        ],
        {("permission", "read-offline", "permission_widened")},
        SAFE,
    ),
    "service_pattern_narrowed": (
        [
            (
                "permissions.py",
                'name_patterns=[f"(?!{re.escape(FRAUD_DETECTION_V1)}$).*"],',
                'name_patterns=["fraud_detection_v2"],',
            )
        ],
        {("permission", "read-online-services", "permission_narrowed")},
        BREAKING,
    ),
    "permission_renamed": (
        [("permissions.py", 'name="read-offline",', 'name="read-offline-v2",')],
        {
            ("permission", "read-offline", "permission_renamed"),
            ("permission", "read-offline-v2", "permission_renamed"),
        },
        SAFE,
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_permission_edits_are_planned_by_the_access_they_change(
    dev: Stack, full_repo: Path, tmp_path: Path, edit: str
) -> None:
    if registry_permissions(dev) != PERMISSIONS:
        apply_of(dev, full_repo, allow=True)
    edits, expected, classification = EDITS[edit]
    planned = plan_of(dev, repo_copy(tmp_path, edit, edits))
    assert change_kinds(planned) == expected
    assert {c.classification for c in planned.changes} == {classification}
    assert planned.exit_code == (3 if classification == BREAKING else 0)


def test_the_command_line_plan_exits_3_for_a_narrowed_permission(
    dev: Stack, full_repo: Path, tmp_path: Path
) -> None:
    if registry_permissions(dev) != PERMISSIONS:
        apply_of(dev, full_repo, allow=True)
    repo = repo_copy(tmp_path, "narrowed", EDITS["writer_loses_online_reads"][0])
    result = ci("plan", dev, repo)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "read-online-views" in result.stdout
