"""The training-set CronJob (values trainingSet.*): off unless enabled; on, a suspended
CronJob whose command line the platform's own parser takes, on a volume the chart makes
(or names), with a NetworkPolicy to DNS, PostgreSQL and, with engine ray, the Ray head;
the combinations that cannot work refuse to render; and the pod's command, run as a local
process against the test services, writes the training set."""

from __future__ import annotations

import copy
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import psycopg
import pyarrow.parquet as pq
import pytest
from rendering import (
    CHART,
    SCENARIOS,
    STORE_CLIENT_LABEL,
    RenderError,
    assert_external_postgres_egress,
    assert_reaches_dns_and_postgres_only,
    ci_load_steps,
    container_env,
    containers,
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
from feature_platform.offline import tables as offline_tables

DEV = [CHART / "values-dev.yaml"]
MOUNT = "/var/lib/feature-platform/training"
ON: dict[str, Any] = {"trainingSet": {"enabled": True}}
RAY: dict[str, Any] = {
    "trainingSet": {
        "enabled": True,
        "engine": "ray",
        "ray": {"address": "ray://fp-ray-head-svc:10001", "port": 10001, "tasks": 6,
                "headSelector": {"ray.io/node-type": "head"}},
        "volume": {"accessModes": ["ReadWriteMany"], "storageClassName": "nfs-client"},
    },
}  # fmt: skip
DEFAULT_SQL = (
    "SELECT transaction_id, customer_id, merchant_id, amount, event_timestamp, is_fraud "
    "FROM transactions"
)


def _job(objects: list[dict[str, Any]]) -> tuple[dict, dict, dict]:
    """(CronJob, pod, container) of the training set."""
    return cronjob_container(objects, "-training-set")


def _parsed(args: list[str]) -> Any:
    """The container's arguments as `feature-platform` itself reads them."""
    return cli.parser().parse_args(args)


def _ray_with(**changes: dict[str, Any]) -> dict[str, Any]:
    """RAY with some of its blocks changed."""
    values = copy.deepcopy(RAY)
    for key, value in changes.items():
        values["trainingSet"][key] = {**values["trainingSet"][key], **value}
    return values


def test_off_by_default() -> None:
    objects = render(DEV)
    assert [o for o in objects if o["metadata"]["name"].endswith("-training-set")] == []
    notes = next(t for n, t in render_templates(DEV).items() if n.endswith("NOTES.txt"))
    assert "training-set" not in notes


def test_defaults_render_a_suspended_job_on_its_own_volume() -> None:
    objects = render(DEV, ON)
    cronjob, pod, c = _job(objects)
    spec = cronjob["spec"]
    assert spec["suspend"] is True
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["timeZone"] == "Etc/UTC"
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 7200 and job["backoffLimit"] == 1
    assert pod["spec"]["restartPolicy"] == "Never"
    assert c["command"] == ["feature-platform"]
    assert c["args"] == [
        "training-set", "dev",
        "--labels-sql", DEFAULT_SQL,
        "--feature-service", "fraud_detection_v1",
        "--output", f"{MOUNT}/training-sets/fraud_detection_v1.parquet",
        "--chunk-rows", "200000",
        "--engine", "fast",
    ]  # fmt: skip
    env = container_env(c, objects)
    assert env["OFFLINE_MIRROR_DIR"] == f"{MOUNT}/mirror"
    assert "TRAINING_RAY_ADDRESS" not in env and "TRAINING_RAY_TASKS" not in env
    # The stores' settings and secrets, as every platform container gets them.
    assert env["OFFLINE_DB"] and env["REGISTRY_DB"] and "POSTGRES_PASSWORD_FILE" in env
    assert env["FEATURE_STORE_YAML"] == "/etc/feast/feature_store.yaml"

    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    claim = one(objects, "PersistentVolumeClaim", "-training-set")
    assert volumes[mounts[MOUNT]["name"]]["persistentVolumeClaim"] == {
        "claimName": claim["metadata"]["name"]
    }
    assert not mounts[MOUNT].get("readOnly")
    assert volumes[mounts["/tmp"]["name"]]["emptyDir"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert "storageClassName" not in claim["spec"], "empty means the cluster's default"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    assert c["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "3Gi"},
    }
    notes = next(t for n, t in render_templates(DEV, ON).items() if n.endswith("NOTES.txt"))
    assert f"create job --from=cronjob/{cronjob['metadata']['name']} " in notes
    assert f"{MOUNT}/training-sets/fraud_detection_v1.parquet" in notes


def test_security_contexts_and_checksum_are_the_chart_wide_ones() -> None:
    objects = render(DEV, ON)
    _, pod, c = _job(objects)
    materialize = pod_template(one(objects, "CronJob", "-materialize"))
    (reference,) = containers(materialize)
    pod_context = dict(pod["spec"]["securityContext"])
    # A volume of many files is chowned only when its root is not the pod's group yet.
    assert pod_context.pop("fsGroupChangePolicy") == "OnRootMismatch"
    assert pod_context == materialize["spec"]["securityContext"]
    assert pod_context["fsGroup"] == c["securityContext"]["runAsGroup"]
    assert c["securityContext"] == reference["securityContext"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert "serviceAccountName" not in pod["spec"]
    assert pod["metadata"]["labels"][STORE_CLIENT_LABEL] == "true"

    checksum = pod["metadata"]["annotations"]["checksum/config"]
    assert checksum == materialize["metadata"]["annotations"]["checksum/config"]
    changed = render(DEV, {**ON, "postgres": {"offlineDatabase": "other_offline"}})
    assert _job(changed)[1]["metadata"]["annotations"]["checksum/config"] != checksum


def test_the_policy_lets_it_reach_dns_and_postgres_only() -> None:
    objects = render(DEV, ON)
    _, pod, _ = _job(objects)
    assert_reaches_dns_and_postgres_only(objects, "-training-set", pod)


def test_external_postgres_is_reached_on_its_addresses() -> None:
    assert_external_postgres_egress(rendered_scenario("ci/external-values"), "-training-set")


def test_ray_runs_the_join_on_the_cluster_over_a_shared_volume() -> None:
    objects = render(DEV, RAY)
    _, _, c = _job(objects)
    assert c["args"][c["args"].index("--engine") + 1] == "ray"
    env = container_env(c, objects)
    assert env["TRAINING_RAY_ADDRESS"] == "ray://fp-ray-head-svc:10001"
    assert env["TRAINING_RAY_TASKS"] == "6"
    assert env["OFFLINE_MIRROR_DIR"] == f"{MOUNT}/mirror"
    claim = one(objects, "PersistentVolumeClaim", "-training-set")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["storageClassName"] == "nfs-client"
    egress = one(objects, "NetworkPolicy", "-training-set")["spec"]["egress"]
    head = [r for r in egress if any(p["port"] == 10001 for p in r["ports"])]
    assert head == [
        {
            "to": [{"podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
            "ports": [{"port": 10001, "protocol": "TCP"}],
        }
    ]
    # An empty selector: any pod of the namespace, on the head's port only.
    anywhere = _ray_with(ray={"headSelector": {}})
    egress = one(render(DEV, anywhere), "NetworkPolicy", "-training-set")["spec"]["egress"]
    assert egress[-1]["to"] == [{"podSelector": {}}]


def test_an_existing_claim_is_used_and_none_is_made() -> None:
    objects = render(DEV, {"trainingSet": {"enabled": True, "volume": {"existingClaim": "ml"}}})
    assert find(objects, "PersistentVolumeClaim", "-training-set") == []
    _, pod, _ = _job(objects)
    (volume,) = [v for v in pod["spec"]["volumes"] if "persistentVolumeClaim" in v]
    assert volume["persistentVolumeClaim"] == {"claimName": "ml"}


def test_labels_from_a_file_on_the_volume_and_no_mirror() -> None:
    overrides = {
        "trainingSet": {
            "enabled": True,
            "labelsSql": "",
            "labelsPath": "labels/2026-11.parquet",
            "mirror": False,
            "featureService": "fraud_detection_v2",
            "chunkRows": 50000,
            "output": "sets/v2.parquet",
            "engine": "feast",
        }
    }
    objects = render(DEV, overrides)
    _, _, c = _job(objects)
    assert c["args"] == [
        "training-set", "dev",
        "--labels", f"{MOUNT}/labels/2026-11.parquet",
        "--feature-service", "fraud_detection_v2",
        "--output", f"{MOUNT}/sets/v2.parquet",
        "--chunk-rows", "50000",
        "--engine", "feast",
    ]  # fmt: skip
    # Set, and empty: the image's env file would otherwise name a directory of its own.
    assert container_env(c, objects)["OFFLINE_MIRROR_DIR"] == ""
    parsed = _parsed(c["args"])
    assert parsed.labels == Path(f"{MOUNT}/labels/2026-11.parquet")
    assert parsed.labels_sql is None
    assert (parsed.feature_service, parsed.chunk_rows, parsed.engine) == (
        "fraud_detection_v2",
        50000,
        "feast",
    )


def test_the_command_line_is_the_platforms() -> None:
    """The default arguments, read by the platform's own parser."""
    _, _, c = _job(render(DEV, ON))
    parsed = _parsed(c["args"])
    assert parsed.command == "training-set" and parsed.env == "dev"
    assert parsed.labels_sql == DEFAULT_SQL and parsed.labels is None
    assert parsed.feature_service == "fraud_detection_v1" and parsed.features is None
    assert parsed.output == Path(f"{MOUNT}/training-sets/fraud_detection_v1.parquet")
    assert (parsed.chunk_rows, parsed.engine) == (200000, "fast")


def test_the_ray_command_line_is_the_platforms() -> None:
    _, _, c = _job(render(DEV, RAY))
    assert _parsed(c["args"]).engine == "ray"


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"labelsPath": "labels.parquet"}, "exactly one of labelsSql and labelsPath"),
        ({"labelsSql": "  "}, "exactly one of labelsSql and labelsPath"),
        ({"engine": "ray", "volume": {"accessModes": ["ReadWriteMany"]}}, r"ray\.address"),
        ({"engine": "ray", "ray": {"address": "ray://h:10001"}}, "ReadWriteMany"),
        (
            {
                "engine": "ray",
                "mirror": False,
                "ray": {"address": "ray://h:10001"},
                "volume": {"accessModes": ["ReadWriteMany"]},
            },
            r"trainingSet\.mirror",
        ),
        ({"resources": {"limits": {"memory": "1536Mi"}}}, r"below 2Gi"),
        # 2 G is less than 2 Gi
        ({"resources": {"limits": {"memory": "2G"}}}, r"below 2Gi"),
        ({"resources": {"limits": {"memory": 2000000000}}}, r"below 2Gi"),
    ],
)
def test_impossible_settings_are_refused(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=named):
        render(DEV, {"trainingSet": {"enabled": True, **overrides}})


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"output": "/etc/feast/out.parquet"}, "output"),
        ({"output": "../out.parquet"}, "output"),
        ({"output": "out.csv"}, "output"),
        ({"labelsPath": "a/../../labels.csv"}, "labelsPath"),
        ({"engine": "auto"}, "engine"),
        ({"volume": {"accessModes": ["ReadOnlyMany"]}}, "accessModes"),
        ({"volume": {"size": "lots"}}, "size"),
        ({"ray": {"address": "fp-ray-head-svc:10001"}}, "address"),
        ({"chunkRows": 0}, "chunkRows"),
        ({"labelSql": "SELECT 1"}, "labelSql"),
    ],
)
def test_the_schema_refuses_wrong_values(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(RenderError, match=re.escape(named)):
        render(DEV, {"trainingSet": {"enabled": True, **overrides}})


def test_a_memory_limit_of_2gi_or_more_renders() -> None:
    for memory in ("2Gi", "2.5Gi", 4294967296, "2147483648"):
        objects = render(DEV, {"trainingSet": {"enabled": True, "resources": {"limits": {
            "cpu": "2", "memory": memory}}}})  # fmt: skip
        assert _job(objects)[2]["resources"]["limits"]["memory"] == memory


def test_a_name_kubernetes_would_refuse_is_refused() -> None:
    """A CronJob name has at most 52 characters (its Jobs add 11)."""
    with pytest.raises(RenderError, match="52 characters"):
        render(DEV, {**ON, "fullnameOverride": "x" * 40})
    cronjob, _, _ = _job(render(DEV, {**ON, "fullnameOverride": "x" * 39}))
    assert len(cronjob["metadata"]["name"]) == 52


@pytest.mark.parametrize("variant", ["defaults", "ray", "existing-claim", "file"])
def test_the_objects_validate_strictly(variant: str) -> None:
    overrides: dict[str, Any] = {
        "defaults": ON,
        "ray": RAY,
        "existing-claim": {"trainingSet": {"enabled": True, "volume": {"existingClaim": "ml"}}},
        "file": {"trainingSet": {"enabled": True, "labelsSql": "", "labelsPath": "l.csv"}},
    }[variant]
    new = [o for o in render(DEV, overrides) if o["metadata"]["name"].endswith("-training-set")]
    assert {o["kind"] for o in new} >= {"CronJob", "NetworkPolicy"}
    for version in KUBERNETES_VERSIONS:
        for obj in new:
            kubernetes_validate.validate(obj, version, strict=True)


def test_the_scenarios_carry_both_shapes() -> None:
    """The scenario-wide checks (strict validation, checkov, the platform's policy, the
    identities) see the job on one pod and against a Ray cluster."""
    local = rendered_scenario("ci/external-values")
    assert _job(local)[2]["args"][-1] == "fast"
    assert find(local, "PersistentVolumeClaim", "-training-set")
    ray = rendered_scenario("ci/kubernetes-auth-values")
    _, pod, c = _job(ray)
    assert c["args"][-1] == "ray"
    assert one(ray, "PersistentVolumeClaim", "-training-set")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    # Its own identity, bound no Feast role: it reads the databases and calls no server.
    name = pod["spec"]["serviceAccountName"]
    assert one(ray, "ServiceAccount", "-training-set")["metadata"]["name"] == name
    subjects = [s["name"] for b in find(ray, "RoleBinding") for s in b["subjects"]]
    assert name not in subjects


# --- the pod's command as a local process ------------------------------------------------

SIZES = ["--customers", "40", "--merchants", "6", "--days", "5", "--transactions", "250"]


@pytest.mark.integration
def test_the_job_writes_the_training_set(tmp_path: Path) -> None:
    """The rendered container (args, env from its ConfigMaps and Secrets, the volume as a
    local directory) against this run's own databases: the default query's labels, each
    with the feature service's columns, in one parquet file under the volume."""
    from stacks import make_stack

    stack = make_stack("dev", "training_chart", tmp_path / "stack")
    try:
        s = stack.settings()
        overrides = stack_values(s)
        objects = render(SCENARIOS["ci/external-values"], overrides)
        objects += [
            secret_object("ci-postgres", {"password": s["POSTGRES_PASSWORD"]}),
            secret_object("ci-redis", {"password": s["REDIS_PASSWORD"]}),
        ]
        for name, args in ci_load_steps("dev", SIZES):
            with stack.active():
                assert cli.main(args) == 0, name

        _, pod, c = _job(objects)
        command, volume_dir = local_command_with_claim(pod, c, objects, tmp_path / "pod", MOUNT)
        assert command.env["OFFLINE_MIRROR_DIR"] == str(volume_dir / "mirror")
        done = subprocess.run(
            command.argv, env=command.env, cwd=command.cwd, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-3000:]

        table = pq.read_table(volume_dir / "training-sets" / "fraud_detection_v1.parquet")
        conninfo = offline_tables.postgres_conninfo(s, s["OFFLINE_DB"])
        with psycopg.connect(conninfo) as conn:
            ids = [r[0] for r in conn.execute("SELECT transaction_id FROM transactions")]
        assert sorted(table.column("transaction_id").to_pylist()) == sorted(ids)
        assert len(ids) == 250
        with stack.active():
            store = stack.store()
            service = store.get_feature_service("fraud_detection_v1")
        features = {f.name for p in service.feature_view_projections for f in p.features}
        assert features <= set(table.column_names)
        # Features were joined, not only passed through: some label has a value.
        assert table.column("avg_purchase_30d").null_count < table.num_rows
        # Read through the mirror on the volume: every view's table copied there.
        manifests = sorted(p.parent.name for p in (volume_dir / "mirror").glob("*/*/manifest.json"))
        assert manifests == [
            "public.customer_stats",
            "public.customer_txn_1h",
            "public.merchant_stats",
        ]
        # Nothing but the output is left beside it.
        assert [p.name for p in (volume_dir / "training-sets").iterdir()] == [
            "fraud_detection_v1.parquet"
        ]
    finally:
        stack.close()
