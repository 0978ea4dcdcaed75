"""FastAPI app factory shared by the four API processes.

Every API has ``/healthz`` (alive), ``/readyz`` (database and broker reachable), ``/metrics``
(Prometheus), problem+json errors, JWT verification and a ``traceparent`` bound per request.
Every route is a :class:`StrictJSONRoute` (the services' routers come from :func:`api_router`):
a JSON body naming a key twice is refused, and so is a control character in a path or query
parameter. The API process has no Kafka client: it only writes outbox rows.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db
from .errors import (
    PROBLEM_JSON,
    DuplicateKey,
    Problem,
    install_handlers,
    unexpected_response,
)
from .inputs import CONTROL_CHARACTER
from .logs import child_traceparent, configure_logging, traceparent_var
from .settings import ServiceSettings

REQUESTS = Counter("http_requests_total", "HTTP requests", ["method", "route", "status"])
DURATION = Histogram(
    "http_request_duration_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


@dataclass
class State:
    """What the lifespan builds and the dependencies hand out."""

    settings: ServiceSettings
    pool: asyncpg.Pool
    http: httpx.AsyncClient
    # scoped to all tenants, for what no caller's scope fits (provider callbacks); None unless
    # the service asked for it
    all_tenants_pool: asyncpg.Pool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    """TCP reachability of the first bootstrap server that answers."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (OSError, TimeoutError, ValueError):
            continue
        writer.close()
        return True
    return False


async def database_ready(pool: asyncpg.Pool) -> bool:
    try:
        async with asyncio.timeout(2):
            return bool(await pool.fetchval("SELECT 1"))
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return False


class FastJSONResponse(Response):
    """JSON rendered by orjson, for hot endpoints returning plain JSON-typed data."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # rare: only then look for the culprit
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def loads_strict(body: bytes | str) -> Any:
    """JSON as ``json.loads`` reads it, except that an object naming a key twice, at any depth,
    raises :class:`DuplicateKey` (instead of the last value silently winning)."""
    return json.loads(body, object_pairs_hook=_unique_keys)


class StrictJSONRequest(Request):
    """A request whose JSON body is read by :func:`loads_strict` (FastAPI reads a JSON body
    through ``json()``, once)."""

    async def json(self) -> Any:
        return loads_strict(await self.body())


def _refuse_control_characters(request: Request) -> None:
    """A 422 for a control character in a path or query parameter (its name or its value, once
    percent-decoded), whatever type the endpoint declares it as: like text in a body."""
    for where, items in (
        ("path", request.path_params.items()),
        ("query", request.query_params.multi_items()),
    ):
        for name, value in items:
            if CONTROL_CHARACTER.search(name) or (
                isinstance(value, str) and CONTROL_CHARACTER.search(value)
            ):
                raise RequestValidationError(
                    [
                        {
                            "loc": (where, name),
                            "msg": "must not contain control characters (U+0000-U+001F, U+007F)",
                            "type": "control_character",
                        }
                    ]
                )


class StrictJSONRoute(APIRoute):
    """A route whose endpoint gets a :class:`StrictJSONRequest` (FastAPI's custom route class):
    the body is parsed once, by the strict parser, where FastAPI would have parsed it. Its path
    and query parameters are checked first."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            _refuse_control_characters(request)
            return await handle(StrictJSONRequest(request.scope, request.receive))

        return strict_handler


def api_router() -> APIRouter:
    """The router of a service's public API (``/v1``): every route a :class:`StrictJSONRoute`."""
    return APIRouter(prefix="/v1", route_class=StrictJSONRoute)


class _Observe:
    """Pure ASGI middleware: binds the request's trace context, counts and times requests, adds
    the headers every answer carries, and answers an unexpected exception itself.

    An exception that reached uvicorn would make it close the connection after the 500, and the
    gateway, which keeps upstream connections alive, would then send the next (innocent) request
    on a closed connection and answer it 502. Here it becomes a logged problem+json 500 on a
    connection that stays usable, or a 503 with Retry-After when it says the database is
    unavailable (``errors.unexpected_response``).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parent = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None
        )
        token = traceparent_var.set(child_traceparent(parent))
        status = 500
        responding = False
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status = message["status"]
                responding = True
                headers = message.get("headers", [])
                # answers are per caller (tokens, orders, payments): never stored by a cache
                extra = _NOSNIFF if any(k == b"cache-control" for k, _ in headers) else _SECURE
                message["headers"] = [*headers, *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if responding:
                raise  # too late for an answer: the connection has to close
            await unexpected_response(exc)(scope, receive, send_with_headers)
        finally:
            traceparent_var.reset(token)
            path = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(scope["method"], path, str(status)).inc()
            DURATION.labels(scope["method"], path).observe(time.perf_counter() - started)


_NOSNIFF = [(b"x-content-type-options", b"nosniff")]
_SECURE = [(b"cache-control", b"no-store"), *_NOSNIFF]


# What any operation of the public API may answer besides its own success: problem+json bodies.
# (No 5xx from any input: a 503 says a dependency is down, e.g. the identity provider's keys.)
PROBLEM_STATUSES = {
    400: "Malformed request (e.g. a header)",
    401: "No valid bearer token",
    403: "The caller's role is too weak",
    404: "Not found, or not the caller's to see",
    409: "A rule of the domain forbids it now",
    422: "Well-formed but not acceptable (validation, or a rule of the input)",
    503: "A dependency is unavailable; try again after Retry-After",
}


REQUIRES_IDEMPOTENCY_KEY = {"x-idempotency-key": "required"}
_ACTIONS = {"cancel", "approve", "reject", "redeem"}


def _resource(path: str) -> str:
    """The resource a path is about, as its OpenAPI tag: the last named segment, not an action
    (``/v1/events/{id}/registrations.csv`` → ``registrations``, ``/v1/orders/{id}/cancel`` →
    ``orders``); every webhook is a ``webhooks``."""
    parts = [p.removesuffix(".csv") for p in path.split("/")[2:] if not p.startswith("{")]
    if parts[0] == "webhooks":
        return "webhooks"
    named = [p for p in parts if p not in _ACTIONS]
    return named[-1] if named else parts[0]


def document_problems(app: FastAPI) -> None:
    """The OpenAPI document tells the truth about errors: every operation of the API may answer
    the problems above, as ``application/problem+json`` (FastAPI's own 422 model, which our
    handler never sends, is replaced). Statuses an operation documents itself are kept.

    Each operation is tagged with the resource its path names, and one that requires an
    Idempotency-Key says so (``openapi_extra=REQUIRES_IDEMPOTENCY_KEY`` on its route: the header
    stays optional for FastAPI so that a missing one gets our own 400 problem)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for path, operations in spec.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue
            for operation in operations.values():
                operation.setdefault("tags", [_resource(path)])
                if operation.pop("x-idempotency-key", None) == "required":
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "Idempotency-Key":
                            parameter["required"] = True
                            parameter["schema"] = {
                                "type": "string",
                                "minLength": 1,
                                "maxLength": 255,
                            }
                responses = operation.setdefault("responses", {})
                for status, description in PROBLEM_STATUSES.items():
                    documented = responses.get(str(status))
                    if documented is None or _is_fastapi_validation_error(documented):
                        responses[str(status)] = {
                            "description": description,
                            "content": {
                                PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}
                            },
                        }
        for unused in ("HTTPValidationError", "ValidationError"):
            if unused not in json.dumps(spec["paths"]):
                schemas.pop(unused, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _is_fastapi_validation_error(response: dict[str, Any]) -> bool:
    return "HTTPValidationError" in json.dumps(response)


def create_base_app(
    settings: ServiceSettings,
    *,
    title: str,
    on_startup: Callable[[State], Awaitable[None]] | None = None,
    on_shutdown: Callable[[State], Awaitable[None]] | None = None,
    all_tenants_pool: bool = False,
) -> FastAPI:
    configure_logging(f"{settings.service_name}-api", settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await db.create_pool(
            settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
        )
        try:
            await db.check_runtime_role(pool)
        except BaseException:
            await pool.close()
            raise
        http = httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=3.0))
        state = State(settings=settings, pool=pool, http=http)
        if all_tenants_pool:
            state.all_tenants_pool = await db.create_pool(
                settings.database_url,
                min_size=1,
                max_size=settings.db_all_tenants_pool_max,
                all_tenants=True,
            )
        app.state.ctx = state
        app.state.verifier = settings.token_verifier()
        try:
            if on_startup is not None:
                await on_startup(state)
            yield
        finally:
            if on_shutdown is not None:
                await on_shutdown(state)
            await http.aclose()
            if state.all_tenants_pool is not None:
                await state.all_tenants_pool.close()
            await pool.close()

    app = FastAPI(title=title, version="1.0.0", lifespan=lifespan)
    app.router.route_class = StrictJSONRoute
    install_handlers(app)
    document_problems(app)

    app.add_middleware(_Observe)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        state: State = request.app.state.ctx
        checks = {
            "database": await database_ready(state.pool),
            "broker": await broker_reachable(settings.kafka_bootstrap_servers),
        }
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
