"""`feature-platform skew-check`: consistent environments pass; a value changed in Redis
behind the platform's back fails the check, named in the report, the JSON and the metrics
a real Pushgateway receives; an unreachable server is one line and exit 3."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from feast.infra.online_stores.helpers import _mmh3, _redis_key
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from pushgateway import Pushgateway
from stacks import Stack

from feature_platform import cli
from feature_platform.checks import skew as skew_check
from feature_platform.devtools.launcher import FeatureServer, free_port
from feature_platform.errors import EXIT_CHECK_FAILED
from feature_platform.serving.client import response_rows

METRIC = "feature_platform_skew_check_"


def _pushed(pushgateway: Pushgateway, environment: str) -> dict[str, float]:
    """The skew check's gauges pushed for `environment`, by name without the prefix."""
    return {
        name.removeprefix(METRIC): value
        for name, _, value in pushgateway.samples(skew_check.PUSH_JOB, environment)
        if name.startswith(METRIC)
    }


def _skew_check(
    stack: Stack, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """The command in this process, with the stack's settings: (exit code, stdout, stderr)."""
    capsys.readouterr()
    with stack.active():
        code = cli.main(["skew-check", stack.env, *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_consistent_environment_passes(
    env_name: str,
    deployed: Stack,
    server: FeatureServer,
    pushgateway: Pushgateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    result_file = tmp_path / "skew.json"
    before = time.time()
    code, out, err = _skew_check(
        deployed, capsys, "--server-url", server.url, "--json", str(result_file),
        "--pushgateway", pushgateway.url, "--seed", "5",
    )  # fmt: skip
    assert code == 0, out + err
    assert f"Skew check of {env_name}: consistent" in out
    result = json.loads(result_file.read_text())
    assert result["consistent"] is True and result["mismatches"] == []
    assert result["rows_compared"] == skew_check.DEFAULT_ROWS
    # Real values were compared, not only nulls, and the never-seen keys were asked for.
    assert result["present_online"] > result["values_compared"] // 2
    assert result["never_seen_keys"] == {"customer_id": 10, "merchant_id": 10}

    metrics = _pushed(pushgateway, env_name)
    assert metrics.pop("last_run_timestamp_seconds") >= before
    assert metrics == {"success": 1, "rows_compared": skew_check.DEFAULT_ROWS, "mismatches": 0}


def _a_present_merchant(server: FeatureServer) -> tuple[int, int]:
    """A merchant whose n_sales_30d is served, and that value."""
    merchants = list(range(1, 31))
    reply = server.online_features(
        {"merchant_id": merchants}, features=["merchant_stats:n_sales_30d"]
    )
    names = reply["metadata"]["feature_names"]
    statuses = reply["results"][names.index("n_sales_30d")]["statuses"]
    for row, status in zip(response_rows(reply), statuses, strict=True):
        if status == "PRESENT":
            return int(row["merchant_id"]), int(row["n_sales_30d"])
    raise AssertionError("no merchant has a served n_sales_30d")


def test_a_value_changed_in_redis_fails_naming_the_feature(
    deployed_dev: Stack,
    server_dev: FeatureServer,
    pushgateway: Pushgateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    merchant, served = _a_present_merchant(server_dev)
    entity = EntityKeyProto(
        join_keys=["merchant_id"], entity_values=[ValueProto(int64_val=merchant)]
    )
    key = _redis_key(deployed_dev.store().project, entity)
    field = _mmh3("merchant_stats:n_sales_30d")
    client = deployed_dev.redis()
    original = client.hget(key, field)
    assert isinstance(original, bytes)
    tampered = ValueProto()
    tampered.ParseFromString(original)
    assert tampered.int64_val == served
    tampered.int64_val = served + 1000
    result_file = tmp_path / "skew.json"
    # The shared stack is left as it was, whatever happens.
    client.hset(key, field, tampered.SerializeToString())
    try:
        # 400 rows over at most 30 merchants: this one is all but certain to be drawn.
        code, out, err = _skew_check(
            deployed_dev, capsys, "--server-url", server_dev.url, "--rows", "400",
            "--json", str(result_file), "--pushgateway", pushgateway.url,
        )  # fmt: skip
    finally:
        client.hset(key, field, original)

    assert code == 1, out + err
    assert "Skew check of dev: " in out and " mismatches" in out
    assert f"merchant_id={merchant}" in out and f"n_sales_30d: online {served + 1000}" in out
    result = json.loads(result_file.read_text())
    assert result["consistent"] is False
    assert result["mismatches_by_feature"] == {"n_sales_30d": result["mismatch_count"]}
    found: list[dict[str, Any]] = result["mismatches"]
    assert found, result
    for mismatch in found:
        assert mismatch["entity"]["merchant_id"] == merchant
        assert (mismatch["online"], mismatch["offline"]) == (served + 1000, served)
        assert mismatch["online_status"] == "PRESENT"
        assert mismatch["problem"] == "values differ"

    metrics = _pushed(pushgateway, "dev")
    assert metrics["success"] == 0
    assert metrics["mismatches"] == len(found)
    assert metrics["rows_compared"] == 400


def test_an_unreachable_server_is_one_line_and_exit_3(
    deployed_local: Stack, pushgateway: Pushgateway, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    code, out, err = _skew_check(deployed_local, capsys, "--server-url", url,
                                 "--pushgateway", pushgateway.url)  # fmt: skip
    assert code == EXIT_CHECK_FAILED
    assert f"skew check failed: cannot reach the feature server at {url}: " in err
    assert "Traceback" not in err and out == ""
    # The run counts as failed; nothing was compared, so no counts are pushed.
    metrics = _pushed(pushgateway, "local")
    assert metrics["success"] == 0
    assert "rows_compared" not in metrics and "mismatches" not in metrics


def test_no_server_url_is_a_config_error(
    deployed_local: Stack, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(skew_check.SERVER_URL_VAR, raising=False)
    code, _out, err = _skew_check(deployed_local, capsys)
    assert code == 2
    assert (
        f"config error: no server URL: pass --server-url or set {skew_check.SERVER_URL_VAR}" in err
    )
