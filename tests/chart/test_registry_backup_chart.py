"""The registry backup CronJob and its suspended restore CronJob (values registryBackup.*):
off unless enabled; on, a backup on a schedule keeping the newest `retain` files on a
volume the chart makes (and keeps) or names, and a restore that never runs on a schedule
and mounts that volume read-only; both with the chart-wide security contexts, a
NetworkPolicy to DNS and PostgreSQL only, and command lines the platform's own parser
takes. Their commands, run as local processes against the test services, write a backup,
prune the old ones, and restore it into an empty database."""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from rendering import (
    CHART,
    SCENARIOS,
    RenderError,
    assert_external_postgres_egress,
    assert_reaches_dns_and_postgres_only,
    assert_settings_of_materialize,
    ci_load_steps,
    cronjob_container,
    find,
    local_command_with_claim,
    one,
    pod_template,
    render,
    render_templates,
    rendered_scenario,
    secret_object,
    stack_values,
)
from test_render import KUBERNETES_VERSIONS

from feature_platform import cli

DEV = [CHART / "values-dev.yaml"]
MOUNT = "/var/lib/feature-platform/registry-backups"
ON: dict[str, Any] = {"registryBackup": {"enabled": True}}
PARTS = ("registry-backup", "registry-restore")


def _job(objects: list[dict[str, Any]], part: str) -> tuple[dict, dict, dict]:
    """(CronJob, pod, container) of one of the two."""
    return cronjob_container(objects, f"-{part}")


def _ours(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["metadata"]["name"].endswith(PARTS)]


def test_off_by_default() -> None:
    assert _ours(render(DEV)) == []
    notes = next(t for n, t in render_templates(DEV).items() if n.endswith("NOTES.txt"))
    assert "registry-backup" not in notes


def test_defaults_back_up_hourly_and_restore_only_on_demand() -> None:
    objects = render(DEV, ON)
    backup, backup_pod, b = _job(objects, "registry-backup")
    restore, restore_pod, r = _job(objects, "registry-restore")
    assert backup["spec"]["suspend"] is False
    assert backup["spec"]["schedule"] == "17 * * * *"
    assert backup["spec"]["concurrencyPolicy"] == "Forbid"
    assert backup["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 2
    # Never on a schedule: suspended, and February 31st never comes.
    assert restore["spec"]["suspend"] is True
    assert restore["spec"]["schedule"] == "0 0 31 2 *"
    assert restore["spec"]["jobTemplate"]["spec"]["backoffLimit"] == 0
    for cronjob in (backup, restore):
        assert cronjob["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 1800
        assert pod_template(cronjob)["spec"]["restartPolicy"] == "Never"

    assert b["command"] == r["command"] == ["feature-platform"]
    assert b["args"] == ["registry-backup", "dev", "--output", MOUNT, "--retain", "48"]
    assert r["args"] == ["registry-restore", "dev", "--input", MOUNT]
    parsed = cli.parser().parse_args(b["args"])
    assert (parsed.command, parsed.env, parsed.output, parsed.retain) == (
        "registry-backup", "dev", Path(MOUNT), 48)  # fmt: skip
    parsed = cli.parser().parse_args(r["args"])
    assert (parsed.command, parsed.env, parsed.input, parsed.replace) == (
        "registry-restore", "dev", Path(MOUNT), False)  # fmt: skip

    claim = one(objects, "PersistentVolumeClaim", "-registry-backup")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert "storageClassName" not in claim["spec"], "empty means the cluster's default"
    for pod, c, read_only in ((backup_pod, b, False), (restore_pod, r, True)):
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        (mount,) = [m for m in c["volumeMounts"] if m["mountPath"] == MOUNT]
        source = volumes[mount["name"]]["persistentVolumeClaim"]
        assert source["claimName"] == claim["metadata"]["name"]
        assert bool(mount.get("readOnly")) is read_only
        assert bool(source.get("readOnly")) is read_only
        assert c["resources"] == {
            "requests": {"cpu": "100m", "memory": "512Mi"},
            "limits": {"cpu": "500m", "memory": "1Gi"},
        }
    notes = next(t for n, t in render_templates(DEV, ON).items() if n.endswith("NOTES.txt"))
    for cronjob in (backup, restore):
        assert f"create job --from=cronjob/{cronjob['metadata']['name']} " in notes


def test_security_contexts_settings_and_checksum_are_the_chart_wide_ones() -> None:
    objects = render(DEV, ON)
    for part in PARTS:
        _, pod, c = _job(objects, part)
        assert_settings_of_materialize(objects, pod, c)


def test_the_policies_let_them_reach_dns_and_postgres_only() -> None:
    objects = render(DEV, ON)
    for part in PARTS:
        _, pod, _ = _job(objects, part)
        assert_reaches_dns_and_postgres_only(objects, f"-{part}", pod)


def test_external_postgres_is_reached_on_its_addresses() -> None:
    objects = rendered_scenario("ci/external-values")
    for part in PARTS:
        assert_external_postgres_egress(objects, f"-{part}")


def test_an_existing_claim_is_used_and_none_is_made() -> None:
    objects = render(DEV, {"registryBackup": {"enabled": True, "volume": {"existingClaim": "bk"}}})
    assert find(objects, "PersistentVolumeClaim", "-registry-backup") == []
    for part in PARTS:
        _, pod, _ = _job(objects, part)
        (volume,) = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == "bk"


def test_a_storage_class_size_and_retention_reach_the_objects() -> None:
    overrides = {"registryBackup": {"enabled": True, "retain": 7, "schedule": "5 */6 * * *",
                 "volume": {"size": "500Mi", "storageClassName": "fast-ssd"}}}  # fmt: skip
    objects = render(DEV, overrides)
    claim = one(objects, "PersistentVolumeClaim", "-registry-backup")
    assert claim["spec"]["storageClassName"] == "fast-ssd"
    assert claim["spec"]["resources"]["requests"]["storage"] == "500Mi"
    backup, _, c = _job(objects, "registry-backup")
    assert c["args"][-2:] == ["--retain", "7"]
    assert backup["spec"]["schedule"] == "5 */6 * * *"
    assert _job(objects, "registry-restore")[0]["spec"]["schedule"] == "0 0 31 2 *"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"retain": 0}, "retain"),
        ({"retain": "48"}, "retain"),
        ({"volume": {"size": "lots"}}, "size"),
        ({"volume": {"accessModes": ["ReadOnlyMany"]}}, "accessModes"),
        ({"volume": {"existingClaim": "Not_A_Name"}}, "existingClaim"),
        ({"keep": 3}, "keep"),
        ({"schedule": ""}, "schedule"),
    ],
)
def test_the_schema_refuses_wrong_values(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=re.escape(named)):
        render(DEV, {"registryBackup": {"enabled": True, **overrides}})


def test_a_name_kubernetes_would_refuse_is_refused() -> None:
    """A CronJob name has at most 52 characters (its Jobs add 11)."""
    with pytest.raises(RenderError, match="52 characters"):
        render(DEV, {**ON, "fullnameOverride": "x" * 36})
    cronjob, _, _ = _job(render(DEV, {**ON, "fullnameOverride": "x" * 35}), "registry-restore")
    assert len(cronjob["metadata"]["name"]) == 52


@pytest.mark.parametrize("variant", ["defaults", "existing-claim"])
def test_the_objects_validate_strictly(variant: str) -> None:
    overrides: dict[str, Any] = {
        "defaults": ON,
        "existing-claim": {"registryBackup": {"enabled": True, "volume": {"existingClaim": "b"}}},
    }[variant]
    new = _ours(render(DEV, overrides))
    assert {o["kind"] for o in new} >= {"CronJob", "NetworkPolicy"}
    for version in KUBERNETES_VERSIONS:
        for obj in new:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_scenarios_carry_them() -> None:
    """The scenario-wide checks (strict validation, checkov, the platform's policy, the
    identities) see both jobs, with and without ServiceAccounts of their own."""
    for name in ("prod", "ci/external-values"):
        objects = rendered_scenario(name)
        for part in PARTS:
            assert "serviceAccountName" not in _job(objects, part)[1]["spec"]
    objects = rendered_scenario("ci/kubernetes-auth-values")
    subjects = [s["name"] for b in find(objects, "RoleBinding") for s in b["subjects"]]
    for part in PARTS:
        name = _job(objects, part)[1]["spec"]["serviceAccountName"]
        assert one(objects, "ServiceAccount", f"-{part}")["metadata"]["name"] == name
        # It reads the database and calls no server: no Feast role.
        assert name not in subjects


# --- the pods' commands as local processes -----------------------------------------------

SIZES = ["--customers", "30", "--merchants", "5", "--days", "3", "--transactions", "60"]
# The password of the Secret an operator creates; the local PostgreSQL trusts and ignores it.
SECRET = "chart-pg-Secret-0b7e"


@pytest.mark.integration
def test_the_jobs_back_up_prune_and_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The rendered containers (args, env from their ConfigMaps and Secrets, the claim as a
    local directory both mount) against this run's own databases: the backup writes a file
    and keeps the newest `retain`; with the registry database dropped, the restore brings
    it back as the repository plans it, and no output holds the password."""
    from stacks import _drop_databases, make_stack

    stack = make_stack("dev", "backup_chart", tmp_path / "stack", {"POSTGRES_PASSWORD": SECRET})
    try:
        s = stack.settings()
        objects = render(SCENARIOS["ci/external-values"], stack_values(s))
        objects += [
            secret_object("ci-postgres", {"password": SECRET}),
            secret_object("ci-redis", {"password": s["REDIS_PASSWORD"]}),
        ]
        for name, args in ci_load_steps("dev", SIZES):
            with stack.active():
                assert cli.main(args) == 0, name
        root = tmp_path / "pods"
        volume = root / MOUNT.lstrip("/")
        # Older backups of this environment, and a file of another that is never pruned.
        volume.mkdir(parents=True)
        old = [datetime.now(UTC) - timedelta(hours=h) for h in (3, 2, 1)]
        olds = [volume / f"registry-dev-{t:%Y%m%dT%H%M%SZ}.backup.gz" for t in old]
        for path in [*olds, volume / "registry-prod-20260101T000000Z.backup.gz"]:
            path.write_bytes(b"an older backup")

        backup = _run(objects, "registry-backup", root)
        assert backup.returncode == 0, backup.stderr[-3000:]
        written = Path(backup.stdout.strip())
        assert written.parent == volume and written.name.startswith("registry-dev-")
        # retain 3: the new one and the two newest old ones.
        assert sorted(p.name for p in volume.iterdir()) == sorted(
            [written.name, olds[1].name, olds[2].name, "registry-prod-20260101T000000Z.backup.gz"]
        )
        for path in olds[1:]:
            path.unlink()  # not backups: the restore takes the newest, which is the real one

        _drop_databases(s, [s["REGISTRY_DB"]])
        restore = _run(objects, "registry-restore", root)
        assert restore.returncode == 0, restore.stderr[-3000:]
        assert written.name in restore.stderr
        capsys.readouterr()
        with stack.active():
            assert cli.main(["plan", "dev"]) == 0
        assert "no changes" in capsys.readouterr().out
        for done in (backup, restore):
            assert SECRET not in done.stdout + done.stderr
    finally:
        stack.close()


def _run(objects: list[dict[str, Any]], part: str, root: Path) -> subprocess.CompletedProcess[str]:
    _, pod, c = _job(objects, part)
    command, _ = local_command_with_claim(pod, c, objects, root, MOUNT)
    return subprocess.run(
        command.argv, env=command.env, cwd=command.cwd, capture_output=True, text=True
    )
