"""The ASGI app: WeChat's provider API (signed answers, faults, one lock around state changes)
and the sandbox control API (plain JSON) under ``/sandbox``, plus ``/healthz``."""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..common import ControlError, control, control_body, valid_retry_after
from .config import LOGGER_NAME, SandboxConfig
from .crypto import authenticate, sign_headers
from .errors import ERRORS, ApiError, ErrorSpec, internal_errno
from .refunds import REFUND_FINAL_STATES
from .sandbox import WeChatSandbox
from .state import FAULT_ENDPOINTS
from .wire import Json, dumps, rfc3339

log = logging.getLogger(LOGGER_NAME)


def signed_response(
    config: SandboxConfig,
    status: int,
    payload: Any | None,
    *,
    code: str | None = None,
    retry_after: int | str | None = None,
) -> Response:
    """A response signed like WeChat's; ``payload`` None means an empty body."""
    body = b"" if payload is None else dumps(payload)
    headers = sign_headers(config, body)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    errno = 0 if code is None else internal_errno(code)
    headers["Request-ID"] = f"{secrets.token_hex(20).upper()}-{errno}"
    media_type = "application/json" if payload is not None else None
    return Response(content=body, status_code=status, headers=headers, media_type=media_type)


def error_response(config: SandboxConfig, err: ApiError) -> Response:
    payload: Json = {"code": err.spec.code, "message": err.message}
    if err.detail is not None:
        payload["detail"] = err.detail
    return signed_response(config, err.spec.status, payload, code=err.spec.code)


def create_app(config: SandboxConfig) -> Starlette:
    """Build the Starlette app of a fresh sandbox (``app.state.sandbox``) for ``config``."""
    sandbox = WeChatSandbox(config)

    def raw_target(request: Request) -> bytes:
        raw_path = request.scope.get("raw_path") or request.url.path.encode("utf-8")
        query: bytes = request.scope.get("query_string", b"")
        return bytes(raw_path) + (b"?" + query if query else b"")

    def api(
        endpoint: str | None,
        run: Callable[[Request, bytes], tuple[int, Any]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a sync provider handler: auth, faults, lock, signed answer."""

        async def handle(request: Request) -> Response:
            try:
                body = await request.body()
                authenticate(
                    config,
                    request.method,
                    raw_target(request),
                    body,
                    request.headers.get("authorization"),
                )
                serial = request.headers.get("wechatpay-serial")
                if serial is not None and serial != config.public_key_id:
                    raise ApiError(
                        "PARAM_ERROR",
                        "Wechatpay-Serial 不正确",
                        field="Wechatpay-Serial",
                        value=serial,
                        issue="unknown platform key id",
                        location="header",
                    )
                if endpoint is not None:
                    fault = sandbox.take_fault(endpoint)
                    if fault is not None:
                        spec = fault.spec
                        log.info("fault injected on %s: %s", endpoint, spec.code)
                        return signed_response(
                            config,
                            spec.status,
                            {"code": spec.code, "message": spec.message},
                            code=spec.code,
                            retry_after=fault.retry_after,
                        )
                async with sandbox.lock:
                    status, payload = run(request, body)
                return signed_response(config, status, payload)
            except ApiError as err:
                return error_response(config, err)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return error_response(config, ApiError("SYSTEM_ERROR"))

        return handle

    def native(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.prepay("NATIVE", body)

    def jsapi(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.prepay("JSAPI", body)

    def query_by_out_trade_no(request: Request, body: bytes) -> tuple[int, Any]:
        no = request.path_params["out_trade_no"]
        return 200, sandbox.query_order(no, None, request.scope.get("query_string", b""))

    def query_by_id(request: Request, body: bytes) -> tuple[int, Any]:
        tid = request.path_params["transaction_id"]
        return 200, sandbox.query_order(None, tid, request.scope.get("query_string", b""))

    def close(request: Request, body: bytes) -> tuple[int, Any]:
        sandbox.close_order(request.path_params["out_trade_no"], body)
        return 204, None

    def refund(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.create_refund(body)

    def query_refund(request: Request, body: bytes) -> tuple[int, Any]:
        return 200, sandbox.query_refund(request.path_params["out_refund_no"])

    # ---- control API ----

    async def sandbox_pay(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        async with sandbox.lock:
            transaction, note = sandbox.pay(request.path_params["out_trade_no"], options)
        return 200, {"transaction": transaction, "notification_id": note.id}

    async def sandbox_settle(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        status = options.get("status", "SUCCESS")
        if status not in REFUND_FINAL_STATES:
            raise ControlError(400, "PARAM_ERROR", "status must be SUCCESS, ABNORMAL or CLOSED")
        async with sandbox.lock:
            refund = sandbox._refunds.get(request.path_params["out_refund_no"])
            if refund is None:
                raise ControlError(404, "RESOURCE_NOT_EXISTS", "退款单不存在")
            if refund.status != "PROCESSING":
                raise ControlError(409, "INVALID_STATE", f"refund is {refund.status}")
            note = sandbox.settle_refund(refund, status)
            view = sandbox.refund_view(refund)
        return 200, {"refund": view, "notification_id": note.id if note else None}

    async def sandbox_add_fault(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        endpoint = options.get("endpoint")
        code = options.get("code")
        times = options.get("times", 1)
        if endpoint not in FAULT_ENDPOINTS:
            raise ControlError(400, "PARAM_ERROR", f"endpoint must be one of {FAULT_ENDPOINTS}")
        if not isinstance(code, str) or code not in ERRORS:
            raise ControlError(400, "PARAM_ERROR", f"code must be one of {sorted(ERRORS)}")
        if type(times) is not int or times < 1:
            raise ControlError(400, "PARAM_ERROR", "times must be a positive integer")
        spec = ERRORS[code]
        status = options.get("status", spec.status)
        message = options.get("message", spec.message)
        if type(status) is not int or not 400 <= status <= 599 or not isinstance(message, str):
            raise ControlError(400, "PARAM_ERROR", "status must be 4xx/5xx, message a string")
        retry_after = options.get("retry_after")
        if retry_after is not None and not valid_retry_after(retry_after):
            raise ControlError(
                400, "PARAM_ERROR", "retry_after must be seconds in 0..3600 or an HTTP date"
            )
        async with sandbox.lock:
            sandbox.add_fault(endpoint, ErrorSpec(status, spec.code, message), times, retry_after)
            return 201, {"faults": sandbox.list_faults()}

    async def sandbox_list_faults(request: Request) -> tuple[int, Any]:
        return 200, {"faults": sandbox.list_faults()}

    async def sandbox_clear_faults(request: Request) -> tuple[int, Any]:
        async with sandbox.lock:
            sandbox.clear_faults()
        return 204, None

    async def sandbox_notifications(request: Request) -> tuple[int, Any]:
        keys = ("id", "event_type", "out_trade_no", "out_refund_no", "state")
        filters = {k: v for k, v in request.query_params.items() if k in keys}
        return 200, sandbox.list_notifications(filters)

    async def sandbox_redeliver(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        note = sandbox._notifications.get(str(options.get("id")))
        times = options.get("times", 1)
        if note is None:
            raise ControlError(404, "NOT_FOUND", "unknown notification id")
        if type(times) is not int or not 1 <= times <= 100:
            raise ControlError(400, "PARAM_ERROR", "times must be an integer in 1..100")
        attempts = await sandbox.redeliver(note, times)
        return 200, {"id": note.id, "attempts": attempts}

    async def sandbox_signtest(request: Request) -> tuple[int, Any]:
        return 200, await sandbox.signtest(request.path_params["out_trade_no"])

    async def sandbox_clock(request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            options = await control_body(request)
            seconds = options.get("advance_seconds", 0)
            if type(seconds) not in (int, float) or seconds < 0:
                raise ControlError(400, "PARAM_ERROR", "advance_seconds must be >= 0")
            async with sandbox.lock:
                sandbox.advance_clock(float(seconds))
        return 200, {"offset_seconds": sandbox._clock_offset, "now": rfc3339(sandbox.now_dt())}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        key = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "SYSTEM_ERROR")
        return error_response(config, ApiError(key))

    routes = [
        Route("/v3/pay/transactions/native", api("prepay", native), methods=["POST"]),
        Route("/v3/pay/transactions/jsapi", api("prepay", jsapi), methods=["POST"]),
        Route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}",
            api("query", query_by_out_trade_no),
            methods=["GET"],
        ),
        Route(
            "/v3/pay/transactions/id/{transaction_id}",
            api("query", query_by_id),
            methods=["GET"],
        ),
        Route(
            "/v3/pay/transactions/out-trade-no/{out_trade_no}/close",
            api("close", close),
            methods=["POST"],
        ),
        Route("/v3/refund/domestic/refunds", api("refund", refund), methods=["POST"]),
        Route(
            "/v3/refund/domestic/refunds/{out_refund_no}",
            api("refund_query", query_refund),
            methods=["GET"],
        ),
        Route("/sandbox/pay/{out_trade_no}", control(sandbox_pay), methods=["POST"]),
        Route("/sandbox/refunds/{out_refund_no}/settle", control(sandbox_settle), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_add_fault), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_list_faults), methods=["GET"]),
        Route("/sandbox/faults", control(sandbox_clear_faults), methods=["DELETE"]),
        Route("/sandbox/notifications", control(sandbox_notifications), methods=["GET"]),
        Route("/sandbox/notifications/redeliver", control(sandbox_redeliver), methods=["POST"]),
        Route("/sandbox/signtest/{out_trade_no}", control(sandbox_signtest), methods=["POST"]),
        Route("/sandbox/clock", control(sandbox_clock), methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await sandbox.aclose()

    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.sandbox = sandbox
    return app
