"""Served vectors, recorded: what production answered, for the skew check and monitoring.

A feature service with a `logging_config` (Feast's own: a destination and a sample rate)
gets a sample of the vectors it serves written to that destination, whichever path served
them. Feast's Python server records nothing. Here a request only appends a reference to
its response to a bounded queue. A thread in each worker turns what is queued into Feast's
log schema (`FeatureServiceLoggingSource`) and writes it in batches through
`store.write_logged_features`. A full queue or a failed write drops rows and counts them
(`feature_server_served_vectors_total{outcome}`); it never slows or fails a request.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa
from feast import FeatureService, FeatureStore
from feast.errors import FeatureServiceNotFoundException
from feast.feature_logging import (
    LOG_DATE_FIELD,
    LOG_TIMESTAMP_FIELD,
    REQUEST_ID_FIELD,
    FeatureServiceLoggingSource,
)
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

from feature_platform.serving import metrics
from feature_platform.serving.fastpath.plans import KeptWhileUnchanged

log = logging.getLogger("feature_platform.server")

SYSTEM_FIELDS = {LOG_TIMESTAMP_FIELD, LOG_DATE_FIELD, REQUEST_ID_FIELD}
STATUS_CODES = {name: FieldStatus.Value(name) for name in FieldStatus.keys()}  # noqa: SIM118
# Served event times repeat (a value is served many times, NOT_FOUND is always the epoch):
# parsed once each. The writer shares the worker's core with the requests.
_event_time = functools.lru_cache(maxsize=65_536)(datetime.fromisoformat)


@dataclass(frozen=True)
class _Service:
    """A logged feature service: its log schema, split into the request's key columns
    (join keys, request data) and its features (`<view>__<feature>`)."""

    definition: FeatureService
    schema: pa.Schema
    keys: list[str]
    features: list[tuple[str, str]]  # (log column prefix, feature name)
    sample_rate: float


@dataclass(frozen=True)
class _Served:
    service: _Service
    entities: dict[str, list[Any]]
    response: dict[str, Any] | bytes  # bytes: Feast's path, parsed off the request path
    served_at: datetime
    rows: int


class VectorLog:
    def __init__(self, store: FeatureStore, max_rows: int, flush_s: float) -> None:
        self.store = store
        self.max_rows = max_rows
        self.flush_s = flush_s
        self._queue: deque[_Served] = deque()
        self._queued_rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._services = KeptWhileUnchanged(store)
        self._thread: threading.Thread | None = None

    def recorder(
        self, service: str, entities: dict[str, list[Any]]
    ) -> Callable[[dict[str, Any] | bytes], None] | None:
        """Where this request's response goes: None unless `service` is logged and the
        request is in the sample."""
        logged = self._service(service)
        if logged is None or (logged.sample_rate < 1 and random.random() >= logged.sample_rate):
            return None
        rows = len(next(iter(entities.values()), []))

        def record(response: dict[str, Any] | bytes) -> None:
            self._queue_response(_Served(logged, entities, response, datetime.now(UTC), rows))

        return record

    def _queue_response(self, served: _Served) -> None:
        with self._lock:
            if self._queued_rows + served.rows > self.max_rows:
                metrics.SERVED_VECTORS.labels("dropped_queue_full").inc(served.rows)
                return
            self._queue.append(served)
            self._queued_rows += served.rows
            full = self._queued_rows >= self.max_rows // 2
        if full:
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="served-vectors", daemon=True)
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, waiting at most `timeout_s` for the destination."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self.flush_s)
            self._wake.clear()
            self.flush()
        self.flush()

    def flush(self) -> None:
        with self._lock:
            batch = list(self._queue)
            self._queue.clear()
            self._queued_rows = 0
        by_service: dict[str, list[_Served]] = {}
        for served in batch:
            by_service.setdefault(served.service.definition.name, []).append(served)
        for items in by_service.values():
            rows = sum(served.rows for served in items)
            service = items[0].service
            try:
                table = _table(service, items)
                self.store.write_logged_features(table, source=service.definition)
            except Exception as exc:  # a destination's failure must never reach serving
                log.warning(
                    "served vectors of %s not written (%d rows): %s",
                    service.definition.name,
                    rows,
                    type(exc).__name__,
                )
                metrics.SERVED_VECTORS.labels("dropped_write_failed").inc(rows)
            else:
                metrics.SERVED_VECTORS.labels("written").inc(rows)

    def _service(self, name: str) -> _Service | None:
        """The service's logging plan, kept while the service and its views are unchanged
        in the registry (worked out again on the request path otherwise)."""
        snapshot = self._services.current()
        kept = self._services.get(name)
        if kept is not None:
            return kept[0]
        service = self._plan(name)
        views = {p.name for p in service.definition.feature_view_projections} if service else set()
        self._services.keep(snapshot, name, service, name, views)
        return service

    def _plan(self, name: str) -> _Service | None:
        try:
            definition = self.store.registry.get_feature_service(
                name, self.store.project, allow_cache=True
            )
        except FeatureServiceNotFoundException:
            return None
        if definition.logging_config is None:
            return None
        schema = FeatureServiceLoggingSource(definition, self.store.project).get_schema(
            self.store.registry
        )
        features = [
            (projection.name_to_use(), feature.name)
            for projection in definition.feature_view_projections
            for feature in projection.features
        ]
        feature_columns = {f"{prefix}__{name}" for prefix, name in features}
        keys = [
            field.name
            for field in schema
            if field.name not in SYSTEM_FIELDS
            and not any(field.name.startswith(column) for column in feature_columns)
        ]
        return _Service(definition, schema, keys, features, definition.logging_config.sample_rate)


def _table(service: _Service, batch: list[_Served]) -> pa.Table:
    """Responses in Feast's log schema: key columns, then per feature its value, event
    time and status, then the log time, date and a request id."""
    columns: dict[str, list[Any]] = {field.name: [] for field in service.schema}
    for served in batch:
        response = (
            orjson.loads(served.response) if isinstance(served.response, bytes) else served.response
        )
        names = response["metadata"]["feature_names"]
        results = dict(zip(names, response["results"], strict=True))
        n_rows = len(response["results"][0]["values"]) if response["results"] else 0
        for key in service.keys:
            values = served.entities.get(key) or results.get(key, {}).get("values")
            columns[key] += values if values is not None else [None] * n_rows
        for prefix, feature in service.features:
            column = f"{prefix}__{feature}"
            # full_feature_names gives `view__feature`; otherwise the bare name
            result = results.get(column) or results.get(feature)
            if result is None:
                # not in the response (Feast drops on-demand features under
                # full_feature_names): logged as not served
                columns[column] += [None] * n_rows
                columns[f"{column}__timestamp"] += [None] * n_rows
                columns[f"{column}__status"] += [FieldStatus.INVALID] * n_rows
                continue
            columns[column] += result["values"]
            columns[f"{column}__timestamp"] += map(_event_time, result["event_timestamps"])
            columns[f"{column}__status"] += map(STATUS_CODES.__getitem__, result["statuses"])
        columns[LOG_TIMESTAMP_FIELD] += [served.served_at] * n_rows
        columns[LOG_DATE_FIELD] += [served.served_at.date()] * n_rows
        request_id = uuid.uuid4().hex
        columns[REQUEST_ID_FIELD] += [request_id] * n_rows
    return pa.table(
        {field.name: pa.array(columns[field.name], type=field.type) for field in service.schema},
        schema=service.schema,
    )
