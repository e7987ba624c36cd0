"""The feature server: Feast's HTTP app behind the platform's own front door.

Every request passes here first, and only the endpoints in `contract.py` are answered
(others 404, unless a setting turns on one of Feast's own). `/health`, `/ready`,
`/metrics` and `/openapi.json` are answered here; `/get-online-features` is validated
here and, on Redis, served by the fast path in `online.py`; write endpoints are gated by
the write mode and written here (`writes.py`: validated, and for `/push` offline first,
then online). A read the fast path cannot describe exactly goes to Feast's own app.
Past the worker's bound on requests in flight (`saturation.py`) a request is answered
503 at once; the probes and `/metrics` never are.
Client mistakes get a 4xx JSON body naming the problem, a dependency failure a 503, and
an unexpected error a 500 without the exception text.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
import redis.asyncio as aioredis
from feast import FeatureStore
from feast.feature_server import get_app
from feast.permissions.action import AuthzedAction
from feast.permissions.user import User

from feature_platform.auth import decision
from feature_platform.auth.tokens import TokenVerifier
from feature_platform.errors import HTTPError, bad_request, not_found, unavailable
from feature_platform.serving import contract, metrics, writes
from feature_platform.serving.errors import require_booleans, store_timed_out
from feature_platform.serving.fastpath.online import Fallback, OnlineReader, entity_columns
from feature_platform.serving.fastpath.plans import PlanCache, ReadPlan, Unsupported
from feature_platform.serving.fastpath.redis_clients import redis_client
from feature_platform.serving.freshness import FreshnessReader
from feature_platform.serving.lifecycle import draining
from feature_platform.serving.read_record import ReadRecorder
from feature_platform.serving.redis_memory import RedisMemoryReader
from feature_platform.serving.registry_refresh import RegistryRefresher
from feature_platform.serving.saturation import InFlight
from feature_platform.serving.settings import ServerSettings
from feature_platform.serving.vector_log import VectorLog

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger("feature_platform.server")

JSON_HEADERS = [(b"content-type", b"application/json")]


class FeatureServerApp:
    def __init__(
        self, store: FeatureStore, settings: ServerSettings, verifier: TokenVerifier | None = None
    ) -> None:
        self.store = store
        self.settings = settings
        # None: no identities (AUTH_TYPE=no_auth); else every data endpoint needs a token
        self.verifier = verifier
        self.decider = decision.AccessDecider(store, enforce=verifier is not None)
        # Feast loads the registry once at start-up; the refresher keeps it current.
        self.feast_app = get_app(store, registry_ttl_sec=0)
        self.registry_refresher = RegistryRefresher(store, settings.registry_ttl_s)
        self.plans = PlanCache(store)
        self.redis = redis_client(store)
        self.reader = (
            OnlineReader(
                self.redis,
                store.project,
                store.config.entity_key_serialization_version,
                settings.store_timeout_s,
            )
            if self.redis is not None
            else None
        )
        self.freshness = FreshnessReader(store, settings.store_timeout_s)
        self.reads = ReadRecorder(self.redis, store.project, settings.store_timeout_s)
        self.redis_memory = (
            RedisMemoryReader(self.redis, store.config.online_store, settings.store_timeout_s)
            if self.redis is not None
            else None
        )
        self.vector_log = VectorLog(
            store, settings.served_vectors_queue_rows, settings.served_vectors_flush_s
        )
        self._document: tuple[Any, bytes] = (None, b"")
        self.in_flight = InFlight(settings.max_in_flight, settings.max_queue_wait_ms / 1e3)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # lifespan (Feast loads the registry and starts its refresh) and websockets
            await self.feast_app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        if draining():
            send = _closing_connection(send)
        status = 500
        try:
            status = await self._route(scope, receive, send, path)
        except HTTPError as exc:
            status = exc.status
            await _send(send, exc.status, orjson.dumps(exc.body()), [*JSON_HEADERS, *exc.headers])
        except Exception:
            log.exception("unexpected error on %s", path)
            await _send_json(send, 500, {"error": "internal error", "detail": "see server log"})
        finally:
            metrics.observe(path, status, time.perf_counter() - started)

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str) -> int:
        methods = contract.ENDPOINTS.get(path)
        if methods is None:
            # Feast's own endpoints, when turned on: the caller is known here, Feast's
            # security manager decides (installed with the verifier, see create_app)
            if not self.settings.serves_feast_path(path):
                raise not_found(f"this server has no endpoint {path[:100]}; see /openapi.json")
        elif scope["method"] not in methods:
            allow = ", ".join(methods)
            raise HTTPError(
                405, "method not allowed", f"{path} answers {allow}", [(b"allow", allow.encode())]
            )
        elif path == "/health":
            return await _send_json(send, 200, {"status": "ok"})
        elif path == "/ready":
            return await self._ready(send)
        elif path == "/metrics":
            return await self._metrics(send)
        user = await self._caller(scope)
        if path == "/openapi.json":
            return await _send(send, 200, await self._openapi(), JSON_HEADERS)
        if path in contract.WRITE_PATHS:
            self._authorize_write(scope)
        body = await _read_body(scope, receive, self.settings.max_body_bytes)
        self.in_flight.admit()
        try:
            if methods is None:
                return await self._to_feast(scope, body, receive, send)
            if path == "/get-online-features":
                return await self._online_features(scope, body, receive, send, user)
            request = _json_object(body)
            if path == "/push":
                if user is not None:
                    self._authorize_push(user, request)
                await writes.push(self.store, request)
            else:
                if user is not None:
                    self._authorize_online_write(user, request)
                await writes.write_to_online_store(self.store, request)
            return await _send(send, 200, b"", [])
        finally:
            self.in_flight.done()

    async def _caller(self, scope: Scope) -> User | None:
        """The verified caller (401/503 without one), or None without identities."""
        if self.verifier is None:
            return None
        return await self.verifier.user(_header(scope, b"authorization"))

    def _authorize_push(self, user: User, request: dict[str, Any]) -> None:
        # What Feast's /push asserts: the push's write actions on every view it feeds.
        name = request.get("push_source_name")
        if isinstance(name, str):
            actions = decision.push_actions(request.get("to", "online"))
            decision.require(self.decider, user, self.decider.push_resources(name), actions)

    def _authorize_online_write(self, user: User, request: dict[str, Any]) -> None:
        name = request.get("feature_view_name")
        if isinstance(name, str) and name:
            resources = self.decider.write_resources(name)
            decision.require(self.decider, user, resources, [AuthzedAction.WRITE_ONLINE])

    async def _openapi(self) -> bytes:
        """The document, rebuilt when the registry snapshot changes (its examples)."""
        snapshot = getattr(self.store.registry, "cached_registry_proto", None)
        cached_for, document = self._document
        if snapshot is None or snapshot is not cached_for:
            built = await asyncio.to_thread(
                contract.document,
                self.store,
                self.settings.write_mode,
                identities=self.verifier is not None,
            )
            document = orjson.dumps(built)
            self._document = (snapshot, document)
        return document

    async def _metrics(self, send: Send) -> int:
        """Freshness and Redis memory are read at once, each within the store deadline."""
        if self.redis_memory is None:
            freshness, memory = await self.freshness.read(), None
        else:
            freshness, memory = await asyncio.gather(
                self.freshness.read(), self.redis_memory.read()
            )
        body, content_type = metrics.exposition(freshness, memory)
        return await _send(send, 200, body, [(b"content-type", content_type.encode())])

    async def _ready(self, send: Send) -> int:
        if draining():
            raise unavailable("shutting down")
        try:
            projects = self.store.registry.list_projects(allow_cache=True)
        except Exception:
            raise unavailable("registry not loaded") from None
        if not any(p.name == self.store.project for p in projects):
            raise unavailable(f"project {self.store.project} not in the registry")
        if self.redis is not None:
            timeout_s = self.settings.store_timeout_s
            try:
                async with asyncio.timeout(timeout_s):
                    await self.redis.ping()
            except TimeoutError:
                raise store_timed_out(timeout_s) from None
            except (aioredis.RedisError, OSError) as exc:
                raise unavailable(f"online store: {type(exc).__name__}") from None
        return await _send_json(send, 200, {"status": "ready"})

    def _authorize_write(self, scope: Scope) -> None:
        mode = self.settings.write_mode
        if mode == "open":
            return
        if mode == "off":
            raise HTTPError(403, "forbidden", "write endpoints are disabled on this server")
        if not writes.token_accepted(_header(scope, b"authorization"), self.settings.write_token):
            raise HTTPError(401, "unauthorized", "a valid bearer token is required")

    async def _online_features(
        self, scope: Scope, body: bytes, receive: Receive, send: Send, user: User | None = None
    ) -> int:
        request = _json_object(body)
        service = request.get("feature_service")
        features = request.get("features", [])
        if service is not None and not isinstance(service, str):
            raise HTTPError(422, "unprocessable", "'feature_service' must be a string")
        if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
            raise HTTPError(422, "unprocessable", "'features' must be a list of strings")
        if not service and not features:
            raise HTTPError(422, "unprocessable", "give 'feature_service' or 'features'")
        require_booleans(request, "full_feature_names", "include_feature_view_version_metadata")
        refs = () if service else tuple(features)
        if user is not None:
            # Feast's decision for both paths, made before either reads anything
            wanted = self.decider.read_resources(service or None, refs)
            decision.require(self.decider, user, wanted, [AuthzedAction.READ_ONLINE])
        entities_in = request.get("entities")
        # served vectors of a logged service (vector_log.py); None for everything else
        record = (
            self.vector_log.recorder(service, entities_in)
            if service and isinstance(entities_in, dict)
            else None
        )
        try:
            plan: ReadPlan | None = self.plans.get(service or None, refs)
        except Unsupported:
            plan = None
        # counted once the registry knows the service: label values stay bounded
        self.reads.note(service or None, refs)
        if plan is None:
            return await self._to_feast(scope, body, receive, send, record)
        entities, n_rows = entity_columns(request.get("entities"), plan, self.settings.max_entities)
        simple = not request.get("full_feature_names") and not request.get(
            "include_feature_view_version_metadata"
        )
        if self.reader is None or not simple:
            return await self._to_feast(scope, body, receive, send, record)
        try:
            response, newest, read_s = await self.reader.read(plan, entities, n_rows)
        except Fallback:
            return await self._to_feast(scope, body, receive, send, record)
        metrics.observe_read(n_rows, read_s, newest)
        if record is not None:
            record(response)
        return await _send(send, 200, orjson.dumps(response), JSON_HEADERS)

    async def _to_feast(
        self,
        scope: Scope,
        body: bytes,
        receive: Receive,
        send: Send,
        record: Callable[[bytes], None] | None = None,
    ) -> int:
        """Feast's app answers; its 5xx bodies (raw exception text) are replaced. With
        `record`, a 200's body is handed to it once sent."""
        replayed = False
        status = 500
        suppressed = False
        sent: list[bytes] = []

        async def replay() -> Message:
            # The body was read already: hand it over once, then wait on the client.
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def guarded_send(message: Message) -> None:
            nonlocal status, suppressed
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 500:
                    suppressed = True
                    return
            if suppressed:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    await _send_json(send, status, _feast_failure(status))
                return
            if record is not None and status == 200 and message["type"] == "http.response.body":
                sent.append(message.get("body", b""))
            await send(message)

        await self.feast_app(scope, replay, guarded_send)
        if record is not None and status == 200:
            record(b"".join(sent))
        return status


def _feast_failure(status: int) -> dict[str, str]:
    if status == 503:
        return {"error": "service unavailable", "detail": "a dependency failed"}
    return {"error": "internal error", "detail": "see server log"}


def _closing_connection(send: Send) -> Send:
    """While draining, every response asks the client to close its connection."""

    async def closing_send(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"connection", b"close")]
        await send(message)

    return closing_send


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("the body is not valid JSON") from None
    if not isinstance(request, dict):
        raise HTTPError(422, "unprocessable", "the body must be a JSON object")
    return request


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value)
    return b""


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    declared = _header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPError(413, "body too large", f"{int(declared)} bytes, at most {limit}")
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise HTTPError(413, "body too large", f"more than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
    return status


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> int:
    return await _send(send, status, orjson.dumps(body), JSON_HEADERS)


def _identities(store: FeatureStore) -> TokenVerifier | None:
    """The verifier, also made the parser of Feast's app, with Feast's security manager
    over the cached registry: what reaches Feast's app is decided by Feast as well."""
    from feature_platform.feast_seam import auth as feast_auth
    from feature_platform.servers import authentication

    verifier = authentication.install(store)
    if verifier is not None:
        feast_auth.use_cached_security_manager(store)
    return verifier


def create_app() -> FeatureServerApp:
    """The app for one gunicorn worker, configured from the process environment."""
    from feature_platform.config import feast_commands

    settings = ServerSettings.from_env()
    store = feast_commands.open_store(os.environ["PLATFORM_ENV"])
    app = FeatureServerApp(store, settings, _identities(store))
    app.registry_refresher.start()
    app.vector_log.start()
    atexit.register(app.vector_log.close)
    atexit.register(metrics.flush)  # the last second's observations
    # Everything loaded so far (Feast, pandas, the registry) lives as long as the worker:
    # keep it out of the collector's way, so full collections stay short.
    gc.collect()
    gc.freeze()
    return app
