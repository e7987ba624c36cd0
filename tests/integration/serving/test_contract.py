"""The server's published contract: only documented endpoints answer, `/openapi.json`
describes them exactly, and a schema-driven fuzzer finds no server error over it.

A stack of its own: the fuzzer's writes (valid pushes among them) must never reach the
shared stacks' comparisons.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import AS_OF, SEED, deploy
from stacks import WRITABLE, WRITE_TOKEN, Stack

from feature_platform.devtools import generator
from feature_platform.devtools.launcher import FeatureServer
from feature_platform.serving import contract

SIZES = generator.Sizes(customers=20, merchants=5, days=2, transactions=50)
AUTH = {"Authorization": f"Bearer {WRITE_TOKEN}"}
# Bounded: examples per operation and mode, and the whole run's time.
FUZZ_EXAMPLES = 30
FUZZ_SECONDS = 300
LEAKS = ("Traceback", 'File "', "postgresql", "psycopg", "password", WRITE_TOKEN)


@pytest.fixture(scope="module")
def served(stack_factory: Callable[..., Stack]) -> FeatureServer:
    stack = deploy(
        stack_factory("dev", "contract"), generator.generate(SIZES, seed=SEED, as_of=AS_OF)
    )
    return stack.server(settings=WRITABLE)


@pytest.fixture(scope="module")
def document(served: FeatureServer) -> dict[str, Any]:
    response = requests.get(f"{served.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


def test_the_document_describes_exactly_what_is_served(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.0")
    served = {path: tuple(m.upper() for m in ops) for path, ops in document["paths"].items()}
    assert served == contract.ENDPOINTS
    for path in ("/push", "/write-to-online-store"):
        operation = document["paths"][path]["post"]
        assert operation["security"] == [{"bearer": []}]
        assert {"401", "403"} <= set(operation["responses"])


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/chat"),
        ("POST", "/chat"),
        ("GET", "/docs"),
        ("GET", "/redoc"),
        ("POST", "/search"),
        ("POST", "/retrieve-online-documents"),
        ("GET", "/v1/vector_stores"),
        ("POST", "/v1/vector_stores/customer_stats/search"),
        ("POST", "/materialize"),
        ("POST", "/materialize-incremental"),
        ("GET", "/static/chat/index.html"),
        ("GET", "/nothing-here"),
    ],
)
def test_undocumented_endpoints_answer_404(served: FeatureServer, method: str, path: str) -> None:
    response = requests.request(method, served.url + path, json={}, headers=AUTH, timeout=10)
    assert response.status_code == 404, response.text
    assert set(response.json()) == {"error", "detail"}


@pytest.mark.parametrize(
    "method,path", [("GET", "/get-online-features"), ("DELETE", "/push"), ("POST", "/health")]
)
def test_a_documented_path_with_another_method_is_405(
    served: FeatureServer, document: dict[str, Any], method: str, path: str
) -> None:
    response = requests.request(method, served.url + path, timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == ", ".join(m.upper() for m in document["paths"][path])
    assert response.json()["error"] == "method not allowed"


def test_every_example_in_the_document_is_answered_200(
    served: FeatureServer, document: dict[str, Any]
) -> None:
    tried = 0
    for path, operations in document["paths"].items():
        body = operations.get("post", {}).get("requestBody", {})
        example = body.get("content", {}).get("application/json", {}).get("example")
        if example is None:
            continue
        response = requests.post(served.url + path, json=example, headers=AUTH, timeout=10)
        assert response.status_code == 200, (path, response.text)
        tried += 1
    assert tried == 3


def _write(served: FeatureServer, body: object, **kwargs: Any) -> requests.Response:
    return requests.post(
        f"{served.url}/write-to-online-store", json=body, headers=AUTH, timeout=10, **kwargs
    )


def _row(**changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "merchant_id": [91_000_001],
        "event_timestamp": [datetime.now(UTC).isoformat()],
        "avg_rating": [4.5],
        "n_disputes_30d": [1],
        "n_sales_30d": [30],
        "category": ["travel"],
    }
    row.update(changes)
    return {k: v for k, v in row.items() if v is not None}


BAD_WRITES = [
    ("no view name", {"df": _row()}, 422, "feature_view_name"),
    ("view name not a string", {"feature_view_name": 5, "df": _row()}, 422, "feature_view_name"),
    ("unknown view", {"feature_view_name": "nope", "df": _row()}, 404, "nope"),
    ("on-demand view", {"feature_view_name": "transaction_vs_history", "df": _row()}, 422,
     "on-demand"),
    ("no df", {"feature_view_name": "merchant_stats"}, 400, "df"),
    ("df not an object", {"feature_view_name": "merchant_stats", "df": [1]}, 400, "df"),
    ("missing feature", {"feature_view_name": "merchant_stats", "df": _row(category=None)}, 400,
     "category"),
    ("missing event time", {"feature_view_name": "merchant_stats",
                            "df": _row(event_timestamp=None)}, 400, "event_timestamp"),
    ("missing join key", {"feature_view_name": "merchant_stats", "df": _row(merchant_id=None)},
     400, "merchant_id"),
    ("text for an Int64", {"feature_view_name": "merchant_stats",
                           "df": _row(n_sales_30d=["many"])}, 400, "n_sales_30d"),
    ("string join key", {"feature_view_name": "merchant_stats", "df": _row(merchant_id=["m1"])},
     400, "merchant_id"),
    ("bad timestamp", {"feature_view_name": "merchant_stats",
                       "df": _row(event_timestamp=["yesterday"])}, 400, "event_timestamp"),
    ("unequal lengths", {"feature_view_name": "merchant_stats", "df": _row(category=["a", "b"])},
     400, "length"),
    ("flag not a boolean", {"feature_view_name": "merchant_stats", "df": _row(),
                            "transform_on_write": "yes"}, 422, "transform_on_write"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case,body,status,fragment", BAD_WRITES, ids=[case[0] for case in BAD_WRITES]
)
def test_write_to_online_store_mistakes_get_4xx_with_a_reason(
    served: FeatureServer, case: str, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = _write(served, body)
    assert response.status_code == status, response.text
    payload = response.json()
    assert set(payload) == {"error", "detail"}
    assert fragment in payload["detail"]
    assert not any(leak in response.text for leak in LEAKS)


def test_a_written_row_is_served_with_its_values(served: FeatureServer) -> None:
    # As Feast's thin client sends it: no creation time of the source's name, a `created`
    # column of its own; the server sets the creation time.
    row = _row(merchant_id=[91_000_002], created=[None])
    assert _write(served, {"feature_view_name": "merchant_stats", "df": row}).status_code == 200
    response = served.online_features(
        {"merchant_id": [91_000_002]},
        features=["merchant_stats:avg_rating", "merchant_stats:category"],
    )
    values = {name: r["values"][0] for name, r in zip(
        response["metadata"]["feature_names"], response["results"], strict=True)}  # fmt: skip
    assert values == {"merchant_id": 91_000_002, "avg_rating": 4.5, "category": "travel"}


def test_writes_without_the_token_are_refused(served: FeatureServer) -> None:
    body = {"feature_view_name": "merchant_stats", "df": _row()}
    response = requests.post(f"{served.url}/write-to-online-store", json=body, timeout=10)
    assert response.status_code == 401


def _fuzz(served: FeatureServer, report: Path, headers: dict[str, str]) -> dict[str, Any]:
    """schemathesis over the served document, every phase and mode, bounded."""
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "run", f"{served.url}/openapi.json",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance,negative_data_rejection,unsupported_method,"
        "allow_header_conformance",
        "--mode", "all", "--max-examples", str(FUZZ_EXAMPLES), "--seed", str(SEED),
        "--request-timeout", "10", "--workers", "1", "--no-color",
        "--report", "ndjson", "--report-ndjson-path", str(report),
    ]  # fmt: skip
    for name, value in headers.items():
        command += ["--header", f"{name}: {value}"]
    run = subprocess.run(  # its example database goes to cwd
        command, capture_output=True, text=True, timeout=FUZZ_SECONDS, cwd=report.parent
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    return _summary(report)


def _summary(report: Path) -> dict[str, Any]:
    """Requests sent, statuses seen and requests without a response (a dropped
    connection, a timeout), from schemathesis's event stream."""
    statuses: dict[int, int] = {}
    unanswered = 0
    for line in report.read_text().splitlines():
        finished = json.loads(line).get("ScenarioFinished")
        if finished is None:
            continue
        for interaction in finished["recorder"].get("interactions", {}).values():
            response = interaction.get("response")
            if response is None:
                unanswered += 1
            else:
                statuses[response["status_code"]] = statuses.get(response["status_code"], 0) + 1
    return {"requests": sum(statuses.values()) + unanswered, "statuses": statuses,
            "unanswered": unanswered}  # fmt: skip


@pytest.mark.parametrize("token", [True, False], ids=["with-token", "without-token"])
def test_a_schema_driven_fuzzer_finds_no_server_error(
    served: FeatureServer, tmp_path: Path, token: bool
) -> None:
    summary = _fuzz(served, tmp_path / "events.ndjson", AUTH if token else {})
    print(f"schemathesis {'with' if token else 'without'} the token: {summary}")
    assert summary["requests"] > 100
    assert summary["unanswered"] == 0
    assert not [status for status in summary["statuses"] if status >= 500]
    if token:
        assert summary["statuses"].get(200, 0) > 0
    else:
        assert summary["statuses"].get(401, 0) > 0
