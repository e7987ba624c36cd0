"""A breaking change shipped as a version, as one rollout, with a client reading throughout.

The feature repository is edited as a pull request edits it (copies selected with
FEATURE_REPO_DIR, as in test_rollout): removing a feature of `customer_stats` in place is
refused with the versioned path offered; `customer_stats_v2` and `fraud_detection_v2`
beside the old ones are applied in two stages (backfill and skew check first, the service
last); the client moves to `fraud_detection_v2`; the old versions stay "read" until the
quiet period passes, and are then retired with their online data. A client sends
requests all along, and none fails.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from faults import eventually
from stacks import Stack
from test_rollout import ROOT, WRONG_REDIS_PASSWORD, ci, cli_env, online_views, plan_of, pointed
from test_rollout import repo_copy as edited_copy

from feature_platform.checks.backfill import backfill
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.rollouts.apply import Applied, apply
from feature_platform.rollouts.versions import QUIET_PERIOD_VAR
from feature_platform.serving.client import online_request
from feature_platform.stores import service_reads

CUSTOMERS = list(range(1, 41))
MERCHANTS = [1 + i % 20 for i in range(len(CUSTOMERS))]
# The client: count- and time-bounded, a short pause between requests (two shared cores).
MAX_REQUESTS = 20_000
MAX_SECONDS = 900
PAUSE_S = 0.02
QUIET_S = 3
# The pull request's plan's Redis user, as docs/rollouts.md gives it (after its password).
PLAN_READER_RULES = (
    "resetkeys ~feature_platform:reads:<project> resetchannels -@all +hgetall +select"
)

IN_PLACE = [("feature_views.py", '        Field(name="n_purchases_7d", dtype=Int64),\n', "")]


def _version_2(text: str) -> str:
    """customer_stats as it is, and beside it customer_stats_v2 without n_purchases_7d, with
    the on-demand view computed from it: each the old definition under its new name."""
    view = text[text.index("customer_stats = FeatureView(") : text.index("# Merchants change")]
    odfv = text[text.index("@on_demand_feature_view(") :]
    view_v2 = view.replace("customer_stats =", "customer_stats_v2 =", 1).replace(
        'name="customer_stats"', 'name="customer_stats_v2"'
    )
    view_v2 = view_v2.replace('        Field(name="n_purchases_7d", dtype=Int64),\n', "")
    view_v2 = view_v2.replace(', **quality_tags("customer_stats")', "")
    odfv_v2 = odfv.replace("sources=[customer_stats,", "sources=[customer_stats_v2,").replace(
        "def transaction_vs_history(", "def transaction_vs_history_v2("
    )
    return f"{text}\n\n# Version 2\n{view_v2}\n\n{odfv_v2}"


V2_SERVICE = """

fraud_detection_v2 = FeatureService(
    name="fraud_detection_v2",
    features=[customer_stats_v2, merchant_stats, customer_txn_1h, transaction_vs_history_v2],
    description="Inputs of the card-fraud model, version 2: without n_purchases_7d.",
)
"""
SERVICE_IMPORT = (
    "from feature_views import customer_stats, customer_txn_1h, merchant_stats, "
    "transaction_vs_history\n"
)
V2_IMPORT = (
    "from feature_views import (\n    customer_stats,\n    customer_stats_v2,\n"
    "    customer_txn_1h,\n    merchant_stats,\n    transaction_vs_history,\n"
    "    transaction_vs_history_v2,\n)\n"
)
VERSIONED = [
    ("feature_views.py", _version_2),
    ("feature_services.py", SERVICE_IMPORT, V2_IMPORT),
    ("feature_services.py", lambda text: text + V2_SERVICE),
]


def _cut(start: str, end: str) -> Callable[[str], str]:
    def cut(text: str) -> str:
        a = text.index(start)
        return text[:a] + text[text.index(end, a) :]

    return cut


# The old versions gone: customer_stats, the on-demand view computed from it, the service.
RETIRED = [
    *VERSIONED,
    ("feature_views.py", _cut("# Daily snapshots", "# Merchants change")),
    ("feature_views.py", _cut("@on_demand_feature_view(", "\n\n# Version 2")),
    ("feature_services.py", _cut("fraud_detection_v1 = FeatureService(", "\n\nfraud_detection_v2")),
    ("feature_services.py", "    customer_stats,\n", ""),
    ("feature_services.py", "    transaction_vs_history,\n", ""),
]


@contextmanager
def plan_reader(stack: Stack, rules: str) -> Iterator[dict[str, str]]:
    """The settings of a Redis ACL user with these rules, for the time of the block."""
    username, password = f"plan-{secrets.token_hex(4)}", secrets.token_hex(16)
    admin = stack.redis()
    admin.acl_setuser(username, enabled=True, passwords=[f"+{password}"])
    admin.execute_command(
        "ACL", "SETUSER", username, *rules.replace("<project>", "fraud_detection").split()
    )
    try:
        yield {"REDIS_USERNAME": username, "REDIS_PASSWORD": password}
    finally:
        admin.acl_deluser(username)


def plan_rows(markdown: str) -> list[str]:
    """The plan's table rows, without how long ago each read was."""
    rows = (line for line in markdown.splitlines() if line.startswith("| "))
    return sorted(re.sub(r"read \d+[smhd] ago", "read ... ago", row) for row in rows)


@dataclass
class Client:
    """A model's client: the same request, by feature service, again and again."""

    url: str
    service: str = "fraud_detection_v1"
    sent: int = 0
    failed: list[str] = field(default_factory=list)
    by_service: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        body = {
            "customer_id": CUSTOMERS,
            "merchant_id": MERCHANTS,
            "amount": [12.5] * len(CUSTOMERS),
        }
        deadline = time.monotonic() + MAX_SECONDS
        with requests.Session() as session:
            while (
                not self.stop.is_set() and self.sent < MAX_REQUESTS and time.monotonic() < deadline
            ):
                service = self.service
                self.sent += 1
                self.by_service[service] = self.by_service.get(service, 0) + 1
                try:
                    reply = session.post(
                        f"{self.url}/get-online-features",
                        json=online_request(body, feature_service=service),
                        timeout=10,
                    )
                    if reply.status_code != 200:
                        self.failed.append(f"{service}: {reply.status_code} {reply.text[:200]}")
                except requests.RequestException as exc:
                    self.failed.append(f"{service}: {type(exc).__name__}")
                self.stop.wait(PAUSE_S)


@pytest.fixture(scope="module")
def stack(
    stack_factory: Callable[..., Stack], generated_tables: dict, tmp_path_factory: Any
) -> Stack:
    stack = stack_factory("dev", "versions")
    stack.write(generated_tables)
    base = edited_copy(tmp_path_factory.mktemp("base"), "base", [])
    assert apply_of(stack, base).outcome == "applied"
    stack.materialize()
    return stack


@pytest.fixture(scope="module")
def server(stack: Stack) -> FeatureServer:
    return stack.server(settings={"FEATURE_SERVER_REGISTRY_TTL_SECONDS": "1"})


@pytest.fixture
def client(server: FeatureServer) -> Iterator[Client]:
    client = Client(server.url)
    thread = threading.Thread(target=client.run, name="client", daemon=True)
    thread.start()
    try:
        yield client
    finally:
        client.stop.set()
        thread.join(timeout=30)


def apply_of(stack: Stack, repo: Path, say: Callable[[str], None] = lambda _m: None) -> Applied:
    with pointed(stack, repo):
        return apply(stack.env, say, lock_timeout=60, backfill=backfill)


def registered_services(stack: Stack) -> set[str]:
    store = stack.store()
    return {s.name for s in store.registry.list_feature_services(store.project, allow_cache=False)}


def served(server: FeatureServer, features: list[str]) -> dict[str, list[Any]]:
    """Values by `view__feature`, read by feature list."""
    body = online_request({"customer_id": CUSTOMERS}, features=features)
    body["full_feature_names"] = True
    reply = requests.post(f"{server.url}/get-online-features", json=body, timeout=10)
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    names = answer["metadata"]["feature_names"]
    return {name: col["values"] for name, col in zip(names, answer["results"], strict=True)}


def readers_cli(stack: Stack, repo: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feature_platform", "rollout-readers", stack.env],
        env=cli_env(stack, repo, **extra),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )


def row_of(output: str, service: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(service + " "))


def test_a_breaking_change_ships_as_a_version_while_clients_read(
    stack: Stack, server: FeatureServer, client: Client, tmp_path: Path
) -> None:
    eventually(lambda: client.sent > 20, "the client is reading")

    # 1. In place: refused, with the versioned path spelled out.
    in_place = ci("plan", stack, edited_copy(tmp_path, "in_place", IN_PLACE))
    assert in_place.returncode == 3, in_place.stderr
    assert "**Ship it as a version instead**" in in_place.stdout
    assert (
        "keep feature view `customer_stats` as it is; add `customer_stats_v2` with the change; "
        "add `fraud_detection_v2` beside `fraud_detection_v1`, `transaction_vs_history_v2` "
        "beside `transaction_vs_history`, reading `customer_stats_v2`; apply backfills "
        "`customer_stats_v2` before it registers the new service(s)"
    ) in in_place.stdout

    # 2. The versions beside the old ones: only additions, so a safe plan.
    versioned = edited_copy(tmp_path, "versioned", VERSIONED)
    planned = plan_of(stack, versioned)
    assert planned.exit_code == 0
    assert {c.name for c in planned.changes} == {
        "customer_stats_v2",
        "transaction_vs_history_v2",
        "fraud_detection_v2",
    }

    # A backfill that fails (Redis refuses the apply's writes) registers the view, not
    # the service, and says why.
    failed = ci("apply", stack, versioned, REDIS_PASSWORD=WRONG_REDIS_PASSWORD)
    assert failed.returncode == 1, failed.stderr
    last_line = failed.stderr.strip().splitlines()[-1]
    assert last_line.startswith("apply failed: backfill failed: customer_stats_v2: "), last_line
    assert "fraud_detection_v2 not registered" in last_line
    assert WRONG_REDIS_PASSWORD not in failed.stdout + failed.stderr
    assert "fraud_detection_v2" not in registered_services(stack)
    assert "customer_stats_v2" not in online_views(stack)
    # The materialization job, which does not take the apply lock, loads the registered
    # view in between and gives it a watermark: the rerun checks it all the same.
    stack.materialize()

    # The rerun backfills, checks, and only then registers the service.
    lines: list[str] = []
    registered_while_checking: list[bool] = []

    def say(line: str) -> None:
        lines.append(line)
        if "skew check passed" in line:
            registered_while_checking.append("fraud_detection_v2" in registered_services(stack))

    applied = apply_of(stack, versioned, say)
    assert applied.outcome == "applied", lines
    assert registered_while_checking == [False], lines
    assert "fraud_detection_v2" in registered_services(stack)
    assert [line for line in lines if "customer_stats_v2" in line or "registering" in line][
        -1
    ] == "registering fraud_detection_v2"
    assert plan_of(stack, versioned).changes == []

    # Both versions serve the same values of an unchanged feature.
    values = served(
        server, ["customer_stats:avg_purchase_30d", "customer_stats_v2:avg_purchase_30d"]
    )
    v1 = values["customer_stats__avg_purchase_30d"]
    v2 = values["customer_stats_v2__avg_purchase_30d"]
    assert v2 == v1
    assert sum(v is not None for v in v2) > len(CUSTOMERS) // 2

    # 3. The client moves to the new service once the server knows it.
    eventually(
        lambda: requests.post(
            f"{server.url}/get-online-features",
            json=online_request({"customer_id": [1], "merchant_id": [1], "amount": [1.0]},
                                feature_service="fraud_detection_v2"),
            timeout=10,
        ).status_code == 200,
        "the server serves fraud_detection_v2",
    )  # fmt: skip
    client.service = "fraud_detection_v2"
    eventually(lambda: client.by_service.get("fraud_detection_v2", 0) > 20, "the client moved")

    # The servers' record of reads: v1 was read within the default quiet period (24h).
    retired = edited_copy(tmp_path, "retired", RETIRED)
    record_key = service_reads.key("fraud_detection")
    eventually(
        lambda: stack.redis().hexists(record_key, "fs:fraud_detection_v2"),
        "the read of fraud_detection_v2 recorded",
        attempts=200,
    )
    readers = readers_cli(stack, retired)
    assert readers.returncode == 0, readers.stderr
    assert "not yet: read within 1d" in row_of(readers.stdout, "fraud_detection_v1")
    assert "no: newest version" in row_of(readers.stdout, "fraud_detection_v2")
    still_read = ci("plan", stack, retired)
    assert still_read.returncode == 3, still_read.stderr
    assert (
        "| delete | feature service | `fraud_detection_v1` | breaking | **old version, "
        "`fraud_detection_v2` succeeds it, but read "
    ) in still_read.stdout

    # 4. Quiet for longer than the quiet period: deleting the old versions is a retirement.
    quiet = {QUIET_PERIOD_VAR: str(QUIET_S)}
    for _ in range(10):
        retire = ci("plan", stack, retired, **quiet)
        if retire.returncode != 3:
            break
        time.sleep(QUIET_S)
    assert retire.returncode == 0, retire.stdout + retire.stderr
    for name in ("customer_stats", "transaction_vs_history", "fraud_detection_v1"):
        assert f"`{name}` | safe | retire: old version, `" in retire.stdout, retire.stdout
    assert "quiet period 3s" in retire.stdout
    # The pull request's plan, with a Redis user that may read the record and nothing else
    # (docs/rollouts.md): the same retirements.
    with plan_reader(stack, PLAN_READER_RULES) as user:
        pull_request = ci("plan", stack, retired, **user, **quiet)
    assert pull_request.returncode == 0, pull_request.stdout + pull_request.stderr
    assert plan_rows(pull_request.stdout) == plan_rows(retire.stdout)
    # A user that may not read the record: the last read is unknown, the deletion breaking.
    with plan_reader(stack, "resetkeys resetchannels -@all +select") as user:
        blind = ci("plan", stack, retired, **user, **quiet)
    assert blind.returncode == 3, blind.stdout + blind.stderr
    assert "succeeds it; last read unknown (" in blind.stdout
    readers = readers_cli(stack, retired, **quiet)
    assert "yes: fraud_detection_v2 succeeds it, unread for 3s" in row_of(
        readers.stdout, "fraud_detection_v1"
    )
    assert online_views(stack)["customer_stats"] > 0

    done = ci("apply", stack, retired, **quiet)
    assert done.returncode == 0, done.stderr
    assert "online data removed for customer_stats" in done.stderr
    assert "customer_stats" not in online_views(stack)
    assert online_views(stack)["customer_stats_v2"] > 0
    assert registered_services(stack) == {"fraud_detection_v2"}
    assert not stack.redis().hexists(record_key, "fv:customer_stats")

    # The client kept reading on the new version after the old one went.
    after_retire = client.by_service["fraud_detection_v2"]
    eventually(lambda: client.by_service["fraud_detection_v2"] > after_retire + 20, "reads go on")
    client.stop.set()
    metrics = requests.get(f"{server.url}/metrics", timeout=10).text
    for label in ("fraud_detection_v1", "fraud_detection_v2", "_features"):
        assert f'feature_server_feature_service_reads_total{{feature_service="{label}"}}' in (
            metrics
        )
    assert client.sent > 100
    assert client.failed == [], client.failed[:5]
    # what each step said, shown with -s
    print("\nplan, in place:", *[r for r in in_place.stdout.splitlines() if "_v2" in r],
          "apply, the new versions:", *lines, "plan, retire:", *plan_rows(retire.stdout),
          "apply, retire:", *[r for r in done.stderr.splitlines() if r.startswith("dev: ")],
          f"client: {client.sent} requests sent, {len(client.failed)} failed, by service "
          f"{client.by_service}", sep="\n  ")  # fmt: skip
