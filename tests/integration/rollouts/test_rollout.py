"""Rollouts: plan and apply against real registries, dev and prod as separate stacks.

Changes are made the way a pull request makes them: an edited copy of feature_repo/,
selected with FEATURE_REPO_DIR. The command-line tests run ci/plan.sh and ci/apply.sh as CI
does; the per-kind tests call the same functions in-process to keep the suite quick.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pytest
from faults import PrivateRedis
from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto
from feast.protos.feast.core.Entity_pb2 import Entity as EntityProto
from feast.protos.feast.core.FeatureService_pb2 import FeatureService as FeatureServiceProto
from feast.protos.feast.core.FeatureView_pb2 import FeatureView as FeatureViewProto
from feast.protos.feast.core.OnDemandFeatureView_pb2 import (
    OnDemandFeatureView as OnDemandFeatureViewProto,
)
from psycopg import sql
from stacks import Stack, patched_environ

from feature_platform.config import environments
from feature_platform.offline import tables as offline_tables
from feature_platform.rollouts import diff as plan_diff
from feature_platform.rollouts import log as rollout_log
from feature_platform.rollouts.apply import LOCK_KEY, LOCK_TIMEOUT_VAR, Applied, apply
from feature_platform.rollouts.diff import ALLOW_BREAKING_VAR
from feature_platform.rollouts.plan import plan

ROOT = environments.PROJECT_ROOT
SECRET_SENTINEL = "sentinel-Secret-9f3a"
# The test's Redis has no password: it rejects any AUTH, as a real one rejects a wrong one.
WRONG_REDIS_PASSWORD = "wrong-Redis-pass-7c1e"

# --- edited copies of the feature repository ---------------------------------------------

Edit = tuple[str, str, str]  # file, old text, new text

SAFE_EDITS: list[Edit] = [
    (
        "feature_views.py",
        '        Field(name="home_country", dtype=String),\n',
        '        Field(name="home_country", dtype=String),\n'
        '        Field(name="n_chargebacks_90d", dtype=Int64),\n',
    ),
    ("entities.py", '"A shop that accepts card payments."', '"A shop that takes cards."'),
]
NEW_SERVICE = """
fraud_detection_v2 = FeatureService(
    name="fraud_detection_v2",
    features=[customer_stats, customer_txn_1h],
    description="A lighter model: customer features only.",
)
"""


def _cut(start: str, end: str | None = None) -> Callable[[str], str]:
    """An edit removing the text from `start` up to `end` (or the end of the file)."""

    def cut(text: str) -> str:
        a = text.index(start)
        return text[:a] + (text[text.index(end, a) :] if end else "")

    return cut


# kind -> (edits, (object type, name, finding kind) expected in the plan)
BREAKING: dict[str, tuple[list[Any], tuple[str, str, str]]] = {
    "delete_view": (
        [
            ("feature_views.py", _cut("# Real-time counters", "@on_demand")),
            ("feature_services.py", "customer_txn_1h, ", ""),
            ("feature_services.py", "merchant_stats, customer_txn_1h,", "merchant_stats,"),
        ],
        ("feature view", "customer_txn_1h", "deleted"),
    ),
    "rename_view": (
        [("feature_views.py", 'name="merchant_stats",', 'name="merchant_stats_v0",')],
        ("feature view", "merchant_stats", "renamed"),
    ),
    "delete_entity": (
        [
            ("entities.py", _cut("merchant = Entity(")),
            ("feature_views.py", _cut("# Merchants change", "# Real-time")),
            (
                "feature_views.py",
                "from entities import customer, merchant",
                "from entities import customer",
            ),
            ("feature_services.py", "customer_txn_1h, merchant_stats, ", "customer_txn_1h, "),
            ("feature_services.py", "customer_stats, merchant_stats,", "customer_stats,"),
        ],
        ("entity", "merchant", "deleted"),
    ),
    "rename_entity": (
        [
            ("entities.py", 'name="customer",', 'name="card_holder",'),
        ],
        ("entity", "customer", "renamed"),
    ),
    "delete_service": (
        [("feature_services.py", _cut("fraud_detection_v1 = "))],
        ("feature service", "fraud_detection_v1", "deleted"),
    ),
    "rename_service": (
        [("feature_services.py", 'name="fraud_detection_v1"', 'name="fraud_detection_v2"')],
        ("feature service", "fraud_detection_v1", "renamed"),
    ),
    "remove_feature": (
        [("feature_views.py", '        Field(name="n_purchases_7d", dtype=Int64),\n', "")],
        ("feature view", "customer_stats", "feature_removed"),
    ),
    "rename_feature": (
        [("feature_views.py", 'Field(name="home_country"', 'Field(name="country"')],
        ("feature view", "customer_stats", "feature_renamed"),
    ),
    "feature_type": (
        [
            (
                "feature_views.py",
                'Field(name="n_sales_30d", dtype=Int64)',
                'Field(name="n_sales_30d", dtype=Float64)',
            )
        ],
        ("feature view", "merchant_stats", "feature_type_changed"),
    ),
    "join_key": (
        [
            ("entities.py", 'join_keys=["merchant_id"]', 'join_keys=["merchant_key"]'),
            ("feature_views.py", 'Field(name="merchant_id"', 'Field(name="merchant_key"'),
        ],
        ("entity", "merchant", "join_key_changed"),
    ),
    "ttl_shrink": (
        [("feature_views.py", "ttl=timedelta(days=2),", "ttl=timedelta(days=1),")],
        ("feature view", "customer_stats", "ttl_shortened"),
    ),
}


def repo_copy(tmp_path: Path, name: str, edits: list[Any]) -> Path:
    """feature_repo/ copied to tmp_path/name with `edits` applied; each must match."""
    repo = tmp_path / name
    shutil.copytree(
        environments.FEATURE_REPO, repo, ignore=shutil.ignore_patterns("data", "__pycache__")
    )
    for edit in edits:
        path = repo / edit[0]
        text = path.read_text()
        if callable(edit[1]):
            new_text = edit[1](text)
        else:
            assert edit[1] in text, f"{edit[0]}: {edit[1]!r} not found"
            new_text = text.replace(edit[1], edit[2], 1)
        assert new_text != text, f"{edit[0]}: edit changed nothing"
        path.write_text(new_text)
    return repo


def safe_repo(tmp_path: Path, name: str = "safe", with_service: bool = True) -> Path:
    repo = repo_copy(tmp_path, name, SAFE_EDITS[:2])
    if with_service:
        services = repo / "feature_services.py"
        services.write_text(services.read_text() + NEW_SERVICE)
    return repo


# --- registries ---------------------------------------------------------------------------


def _registry_conn(stack: Stack) -> psycopg.Connection:
    settings = stack.settings()
    return psycopg.connect(
        offline_tables.postgres_conninfo(settings, settings["REGISTRY_DB"]), autocommit=True
    )


def registry_rows(stack: Stack) -> dict[str, list[str]]:
    """Every row of every Feast registry table, as text (bytea as hex): byte for byte."""
    with _registry_conn(stack) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN (%s, %s) ORDER BY 1",
                (rollout_log.LOG_TABLE, rollout_log.CLEANUP_TABLE),
            )
        ]
        return {
            t: sorted(
                row[0]
                for row in conn.execute(
                    sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(t))
                )
            )
            for t in tables
        }


PROTOS = {
    "entities": ("entity_proto", EntityProto),
    "data_sources": ("data_source_proto", DataSourceProto),
    "feature_views": ("feature_view_proto", FeatureViewProto),
    "on_demand_feature_views": ("feature_view_proto", OnDemandFeatureViewProto),
    "feature_services": ("feature_service_proto", FeatureServiceProto),
}


def definitions(stack: Stack) -> dict[tuple[str, str], bytes]:
    """The registry's definitions without bookkeeping (registration times at any depth,
    version counters, and the pickled UDF, which names the file it was read from)."""
    found: dict[tuple[str, str], bytes] = {}
    with _registry_conn(stack) as conn:
        for table, (column, proto_class) in PROTOS.items():
            query = sql.SQL("SELECT {} FROM {}").format(
                sql.Identifier(column), sql.Identifier(table)
            )
            for (blob,) in conn.execute(query):
                message = proto_class.FromString(blob)
                spec = message if table == "data_sources" else message.spec
                plan_diff.strip_bookkeeping(spec)
                if table == "on_demand_feature_views":
                    spec.feature_transformation.user_defined_function.ClearField("body")
                    spec.user_defined_function.ClearField("body")
                found[(table, spec.name)] = spec.SerializeToString(deterministic=True)
    return found


def apply_log(stack: Stack) -> list[tuple[Any, ...]]:
    with _registry_conn(stack) as conn:
        return conn.execute(
            f"SELECT id, outcome, actor, started_at, finished_at, breaking, breaking_allowed "
            f"FROM {rollout_log.LOG_TABLE} ORDER BY id"
        ).fetchall()


def last_entry(stack: Stack) -> dict[str, Any]:
    """The newest apply log entry, by column name."""
    with _registry_conn(stack) as conn:
        return rollout_log.read(conn, 1)[0]


def pending_cleanups(stack: Stack) -> list[str]:
    with _registry_conn(stack) as conn:
        return [c.view_name for c in rollout_log.pending_cleanups(conn, "fraud_detection")]


def online_views(stack: Stack) -> dict[str, int]:
    """View name -> how many entity hashes in Redis hold a row of it."""
    client = stack.redis()
    counts: dict[str, int] = {}
    for key in client.scan_iter():
        if client.type(key) != b"hash":
            continue
        for name in client.hkeys(key):
            if name.startswith(b"_ts:"):
                counts[name[4:].decode()] = counts.get(name[4:].decode(), 0) + 1
    return counts


def write_online(stack: Stack, customers: int) -> None:
    """Rows for customers 1..n in two views that share the customer's Redis hash."""
    now = datetime.now(UTC)
    ids = list(range(1, customers + 1))
    times = {"event_timestamp": [now] * customers, "created_timestamp": [now] * customers}
    store = stack.store()
    store.write_to_online_store(
        "customer_txn_1h",
        pd.DataFrame({"customer_id": ids, "n_txn_1h": 3, "sum_amount_1h": 42.5, **times}),
    )
    store.write_to_online_store(
        "customer_stats",
        pd.DataFrame(
            {
                "customer_id": ids,
                "avg_purchase_30d": 20.0,
                "n_purchases_7d": 2,
                "n_purchases_30d": 9,
                "account_age_days": 100,
                "home_country": "NL",
                **times,
            }
        ),
    )


# --- running rollouts ------------------------------------------------------------------------


@contextmanager
def pointed(stack: Stack, repo: Path, allow: bool = False) -> Iterator[None]:
    """`stack`'s environment, planning and applying `repo`."""
    extra = {"FEATURE_REPO_DIR": str(repo), ALLOW_BREAKING_VAR: str(allow).lower()}
    with stack.active(), patched_environ(extra):
        yield


def plan_of(stack: Stack, repo: Path) -> Any:
    with pointed(stack, repo):
        return plan(stack.env)


def apply_of(stack: Stack, repo: Path, allow: bool = False) -> Applied:
    with pointed(stack, repo, allow):
        return apply(stack.env, lambda _msg: None, lock_timeout=60)


def cli_env(stack: Stack, repo: Path, **extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in (ALLOW_BREAKING_VAR, LOCK_TIMEOUT_VAR)}
    return {**base, **stack.overrides, "FEATURE_REPO_DIR": str(repo), **extra}


def ci(
    script: str, stack: Stack, repo: Path, *args: str, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run ci/<script>.sh ENV as CI runs it."""
    return subprocess.run(
        ["bash", str(ROOT / "ci" / f"{script}.sh"), stack.env, *args],
        env=cli_env(stack, repo, **extra),
        capture_output=True,
        text=True,
        timeout=600,
    )


def change_kinds(plan: Any) -> set[tuple[str, str, str]]:
    return {(c.object_type, c.name, f.kind) for c in plan.changes for f in c.findings}


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return repo_copy(tmp_path_factory.mktemp("repos"), "base", [])


@pytest.fixture(scope="module")
def dev(stack_factory: Callable[..., Stack], base_repo: Path) -> Stack:
    stack = stack_factory("dev", "rollout_dev")
    assert apply_of(stack, base_repo).outcome == "applied"
    return stack


@pytest.fixture(scope="module")
def prod(stack_factory: Callable[..., Stack], base_repo: Path) -> Stack:
    stack = stack_factory("prod", "rollout_prod")
    assert apply_of(stack, base_repo).outcome == "applied"
    return stack


@pytest.fixture
def own_stack(
    stack_factory: Callable[..., Stack], base_repo: Path, tmp_path: Path
) -> Iterator[Stack]:
    """dev, applied, on a Redis server of this test's own: the shared one's dbs may all be
    claimed by other runs, and this one's data must be only what the test wrote."""
    server = PrivateRedis(tmp_path)
    server.start()
    stack = stack_factory("dev", f"rollout_own_{server.port}", {"REDIS_PORT": str(server.port)})
    try:
        assert apply_of(stack, base_repo).outcome == "applied"
        yield stack
    finally:
        stack.close()  # before the server goes: it flushes its db there
        server.stop()


@pytest.fixture
def reset(dev: Stack, prod: Stack, base_repo: Path) -> Iterator[None]:
    """Each test starts and leaves dev and prod at the base repository."""
    yield
    for stack in (dev, prod):
        apply_of(stack, base_repo, allow=True)
        assert plan_of(stack, base_repo).changes == []


# --- tests -------------------------------------------------------------------------------------


def test_safe_change_goes_to_dev_then_prod_on_promotion(
    dev: Stack, prod: Stack, tmp_path: Path, reset: None
) -> None:
    repo = safe_repo(tmp_path)
    prod_before = registry_rows(prod)

    planned = ci(
        "plan",
        dev,
        repo,
        "--json",
        str(tmp_path / "dev.json"),
        "--markdown",
        str(tmp_path / "dev.md"),
    )
    assert planned.returncode == 0, planned.stderr
    plan_json = (tmp_path / "dev.json").read_text()
    assert '"breaking": false' in plan_json
    assert planned.stdout == (tmp_path / "dev.md").read_text()
    assert "### `dev`: safe" in planned.stdout
    for row in (
        "| create | feature service | `fraud_detection_v2` | safe | new feature service |",
        "| update | feature view | `customer_stats` | safe | feature `n_chargebacks_90d` added |",
        "| update | entity | `merchant` | safe | description changed |",
    ):
        assert row in planned.stdout

    applied = ci("apply", dev, repo, APPLY_ACTOR="alice")
    assert applied.returncode == 0, applied.stderr
    assert "applied 1 created" in applied.stderr
    assert plan_of(dev, repo).changes == []
    # Dev moved on; prod did not, not a byte.
    assert registry_rows(prod) == prod_before
    assert definitions(prod) != definitions(dev)
    assert apply_log(dev)[-1][1:3] == ("applied", "alice")

    # Promotion: the same commit, planned and applied to prod.
    promoted_plan = ci("plan", prod, repo)
    assert promoted_plan.returncode == 0, promoted_plan.stderr
    assert "`fraud_detection_v2`" in promoted_plan.stdout
    promoted = ci("apply", prod, repo)
    assert promoted.returncode == 0, promoted.stderr
    assert definitions(prod) == definitions(dev)


@pytest.mark.parametrize("kind", sorted(BREAKING))
def test_breaking_change_plans_3_and_applies_only_when_allowed(
    kind: str, dev: Stack, base_repo: Path, tmp_path: Path
) -> None:
    edits, expected = BREAKING[kind]
    repo = repo_copy(tmp_path, kind, edits)

    planned = plan_of(dev, repo)
    assert planned.exit_code == 3
    assert expected in change_kinds(planned)
    assert next(c for c in planned.changes if c.name == expected[1]).classification == "breaking"

    before = registry_rows(dev)
    refused = apply_of(dev, repo)
    assert (refused.outcome, refused.exit_code) == ("refused", 3)
    assert registry_rows(dev) == before

    allowed = apply_of(dev, repo, allow=True)
    assert (allowed.outcome, allowed.exit_code) == ("applied", 0)
    assert plan_of(dev, repo).changes == []
    assert [row[1] for row in apply_log(dev)[-2:]] == ["refused", "applied"]

    # Back to the base: a view deleted by apply can be added again (its version
    # history went with it), and so on for every kind.
    apply_of(dev, base_repo, allow=True)
    assert plan_of(dev, base_repo).changes == []


def test_breaking_change_from_the_command_line(dev: Stack, tmp_path: Path, reset: None) -> None:
    repo = repo_copy(tmp_path, "delete_view", BREAKING["delete_view"][0])
    before = registry_rows(dev)

    planned = ci("plan", dev, repo)
    assert planned.returncode == 3, planned.stderr
    assert "### `dev`: **breaking**" in planned.stdout
    assert "Breaking changes are **refused**" in planned.stdout

    refused = ci("apply", dev, repo)
    assert refused.returncode == 3, refused.stderr
    assert "apply refused" in refused.stderr
    assert registry_rows(dev) == before

    allowed = ci("apply", dev, repo, ALLOW_BREAKING_CHANGES="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "Breaking changes are **allowed**" in allowed.stdout
    assert "customer_txn_1h" not in {name for _, name in definitions(dev)}
    assert apply_log(dev)[-1][1] == "applied" and apply_log(dev)[-1][5:] == (True, True)


def test_turning_served_vector_logging_on_is_planned_safe_and_applied(
    dev: Stack, base_repo: Path, tmp_path: Path, reset: None
) -> None:
    # Feast's own diff calls this no change, so its apply would never write it.
    with patched_environ({"SERVED_VECTORS_PATH": str(tmp_path / "vectors")}):
        planned = plan_of(dev, base_repo)
        assert change_kinds(planned) == {
            ("feature service", "fraud_detection_v1", "metadata_changed")
        }
        assert not planned.breaking
        assert apply_of(dev, base_repo).outcome == "applied"
        assert plan_of(dev, base_repo).changes == []
    service = dev.store().get_feature_service("fraud_detection_v1")
    assert service.logging_config is not None
    assert service.logging_config.destination.path == str(tmp_path / "vectors")


def test_plan_leaves_the_registry_byte_identical(dev: Stack, tmp_path: Path) -> None:
    before = registry_rows(dev)
    redis = dev.redis()
    redis_before = {k: redis.dump(k) for k in redis.scan_iter()}
    for name, edits in (("delete_view", BREAKING["delete_view"][0]), ("safe", SAFE_EDITS[:2])):
        result = ci("plan", dev, repo_copy(tmp_path, name, edits))
        assert result.returncode in (0, 3), result.stderr
        assert registry_rows(dev) == before
    assert {k: redis.dump(k) for k in redis.scan_iter()} == redis_before


def test_plan_of_a_never_applied_registry_creates_nothing(
    stack_factory: Callable[..., Stack], base_repo: Path
) -> None:
    fresh = stack_factory("dev", "rollout_fresh")
    planned = plan_of(fresh, base_repo)
    assert planned.registry == "empty" and planned.exit_code == 0
    assert ("feature service", "fraud_detection_v1", "created") in change_kinds(planned)
    # Feast's own `feast plan` creates the registry tables and a project row here.
    assert registry_rows(fresh) == {}


def _hold_lock(stack: Stack) -> psycopg.Connection:
    conn = _registry_conn(stack)
    assert conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone() == (True,)
    return conn


def test_apply_waits_for_the_lock_then_applies(dev: Stack, tmp_path: Path, reset: None) -> None:
    repo = safe_repo(tmp_path)
    before = registry_rows(dev)
    holder = _hold_lock(dev)
    try:
        proc = subprocess.Popen(
            ["bash", str(ROOT / "ci" / "apply.sh"), "dev"],
            env=cli_env(dev, repo, APPLY_LOCK_TIMEOUT_SECONDS="300"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        lines = []
        while not any("waiting up to 300s for the apply lock" in line for line in lines):
            line = proc.stderr.readline()
            assert line, f"apply ended without waiting: {''.join(lines)}"
            lines.append(line)
        # Waiting: nothing applied yet.
        assert registry_rows(dev) == before
    finally:
        holder.close()
    _out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert plan_of(dev, repo).changes == []


def test_apply_gives_up_cleanly_when_the_lock_stays_taken(dev: Stack, tmp_path: Path) -> None:
    repo = safe_repo(tmp_path)
    before, log_before = registry_rows(dev), apply_log(dev)
    holder = _hold_lock(dev)
    try:
        result = ci("apply", dev, repo, "--lock-timeout", "1")
    finally:
        holder.close()
    assert result.returncode == 1
    assert "gave up after 1s waiting for the apply lock" in result.stderr
    assert "Traceback" not in result.stderr
    assert registry_rows(dev) == before
    # Recorded: a rollout that never happened is not silent in the log.
    assert len(apply_log(dev)) == len(log_before) + 1
    entry = last_entry(dev)
    assert entry["outcome"] == "lock_timeout"
    assert entry["error"].startswith("gave up after 1s waiting for the apply lock")
    assert entry["summary"] == "no plan" and entry["landed"] is None


def test_two_applies_at_once_serialize_and_the_last_repo_state_wins(
    dev: Stack, tmp_path: Path, reset: None
) -> None:
    # Two commits: the earlier adds a feature, the later also adds a service.
    earlier = safe_repo(tmp_path, "earlier", with_service=False)
    later = safe_repo(tmp_path, "later", with_service=True)
    log_before = len(apply_log(dev))
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    start = threading.Barrier(2)

    def run(name: str, repo: Path) -> None:
        start.wait()
        results[name] = ci("apply", dev, repo)

    threads = [
        threading.Thread(target=run, args=item) for item in (("earlier", earlier), ("later", later))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # Each either applied, or (the earlier one, second) was refused: it would delete the
    # later one's service. Neither interleaved, nothing was lost.
    assert results["later"].returncode == 0, results["later"].stderr
    assert results["earlier"].returncode in (0, 3), results["earlier"].stderr
    assert plan_of(dev, later).changes == []
    rows = apply_log(dev)[log_before:]
    assert len(rows) == 2
    first, second = rows
    assert first[4] <= second[3], "the second apply started before the first finished"
    if results["earlier"].returncode == 3:
        assert [r[1] for r in rows] == ["applied", "refused"]


@pytest.mark.parametrize("missing", ["POSTGRES_PASSWORD", "REDIS_PASSWORD"])
@pytest.mark.parametrize("script", ["plan", "apply"])
def test_missing_secret_stops_with_2_and_prints_no_secret(
    dev: Stack, base_repo: Path, script: str, missing: str
) -> None:
    env = cli_env(dev, base_repo, POSTGRES_PASSWORD=SECRET_SENTINEL, REDIS_PASSWORD=SECRET_SENTINEL)
    del env[missing]
    result = subprocess.run(
        ["bash", str(ROOT / "ci" / f"{script}.sh"), "dev"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert missing in result.stderr
    assert SECRET_SENTINEL not in result.stdout + result.stderr


def test_a_failure_is_one_line_without_the_password(dev: Stack, base_repo: Path) -> None:
    result = ci(
        "apply",
        dev,
        base_repo,
        REGISTRY_DB="fpt_no_such_registry",
        POSTGRES_PASSWORD=SECRET_SENTINEL,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("apply failed: cannot connect")
    assert SECRET_SENTINEL not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_failed_apply_records_what_landed_and_the_next_apply_completes_it(
    own_stack: Stack, tmp_path: Path
) -> None:
    stack = own_stack
    write_online(stack, 20)
    assert online_views(stack) == {"customer_txn_1h": 20, "customer_stats": 20}
    repo = repo_copy(tmp_path, "delete_view", BREAKING["delete_view"][0])
    planned = {c.label for c in plan_of(stack, repo).changes}
    assert "delete feature view customer_txn_1h" in planned

    # Feast writes the registry, then fails removing the view's online data.
    broken = {"ALLOW_BREAKING_CHANGES": "true", "REDIS_PASSWORD": WRONG_REDIS_PASSWORD}
    failed = ci("apply", stack, repo, **broken)
    assert failed.returncode == 1, failed.stderr
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("apply failed: AuthenticationError"), failed.stderr
    assert "online clean-up pending: customer_txn_1h" in last_line
    assert "the next apply completes it" in last_line
    assert "Traceback" not in failed.stderr
    assert WRONG_REDIS_PASSWORD not in failed.stdout + failed.stderr
    entry = last_entry(stack)
    assert entry["outcome"] == "failed"
    assert set(entry["landed"]) == planned and entry["not_landed"] == []
    assert entry["cleanup_pending"] == ["customer_txn_1h"] and entry["cleanup_done"] is None
    assert WRONG_REDIS_PASSWORD not in str(entry)
    # The registry changed; the data stayed; the plan alone would see nothing left to do.
    assert plan_of(stack, repo).changes == []
    assert online_views(stack) == {"customer_txn_1h": 20, "customer_stats": 20}
    assert pending_cleanups(stack) == ["customer_txn_1h"]

    # Redis still refusing: not "unchanged", and still failing.
    again = ci("apply", stack, repo, **broken)
    assert again.returncode == 1, again.stderr
    assert "online clean-up pending: customer_txn_1h" in again.stderr
    assert last_entry(stack)["outcome"] == "failed"
    assert pending_cleanups(stack) == ["customer_txn_1h"]

    # Redis fixed: the next apply removes the deleted view's data, and only that.
    fixed = ci("apply", stack, repo)
    assert fixed.returncode == 0, fixed.stderr
    assert "completed an earlier failed apply: online data removed for customer_txn_1h" in (
        fixed.stderr
    )
    assert online_views(stack) == {"customer_stats": 20}
    entry = last_entry(stack)
    assert entry["outcome"] == "completed"
    assert entry["cleanup_done"] == ["customer_txn_1h"] and entry["cleanup_pending"] is None
    assert pending_cleanups(stack) == []

    after = ci("apply", stack, repo)
    assert after.returncode == 0, after.stderr
    assert last_entry(stack)["outcome"] == "unchanged"


def test_an_apply_failing_midway_records_which_changes_reached_the_registry(
    own_stack: Stack, tmp_path: Path
) -> None:
    stack = own_stack
    repo = safe_repo(tmp_path)
    planned = sorted(c.label for c in plan_of(stack, repo).changes)
    services = [label for label in planned if " feature service " in label]
    others = [label for label in planned if label not in services]
    assert "create feature service fraud_detection_v2" in services
    assert "update feature view customer_stats" in others
    # Feast writes views and entities before services: refusing service writes stops it
    # half-way, as a registry database failing mid-apply would.
    with _registry_conn(stack) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN RAISE EXCEPTION 'feature services are read-only'; END$$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_write BEFORE INSERT OR UPDATE ON feature_services "
            "FOR EACH ROW EXECUTE FUNCTION refuse_write()"
        )
    failed = ci("apply", stack, repo)
    assert failed.returncode == 1, failed.stderr
    assert "feature services are read-only" in failed.stderr
    assert f"{len(others)} of {len(planned)} in the registry" in failed.stderr
    entry = last_entry(stack)
    assert entry["outcome"] == "failed"
    assert sorted(entry["landed"]) == others
    assert sorted(entry["not_landed"]) == services
    assert sorted(c.label for c in plan_of(stack, repo).changes) == services

    with _registry_conn(stack) as conn:
        conn.execute("DROP TRIGGER refuse_write ON feature_services")
    fixed = ci("apply", stack, repo)
    assert fixed.returncode == 0, fixed.stderr
    entry = last_entry(stack)
    assert entry["outcome"] == "applied"
    assert sorted(entry["landed"]) == services
    assert plan_of(stack, repo).changes == []
