"""The ASGI app: Mollie's API under ``/v2`` (HAL JSON, bearer keys, idempotency keys, faults,
one lock around state changes), the buyer's checkout page, the sandbox control API (plain JSON)
under ``/sandbox`` and ``/healthz``."""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..common import ControlError, control, control_body, valid_retry_after
from .config import LOGGER_NAME, SandboxConfig
from .errors import TITLES, ApiError
from .idempotency import StoredResponse, fingerprint
from .refunds import REFUND_TRANSITIONS
from .sandbox import MollieSandbox
from .state import FAULT_ENDPOINTS, Caller, Fault, Payment
from .validation import parse_body
from .wire import Json, dumps, money_value

log = logging.getLogger(LOGGER_NAME)

HAL = "application/hal+json"

#: control API action → payment status
CONTROL_ACTIONS = {
    "pay": "paid",
    "fail": "failed",
    "cancel": "canceled",
    "expire": "expired",
    "authorize": "authorized",
    "pending": "pending",
}
#: checkout form ``action`` values the buyer can pick
CHECKOUT_ACTIONS = ("paid", "failed", "canceled")

Handler = Callable[[Request, Caller, Json], tuple[int, Any]]


def hal_response(status: int, payload: Any | None) -> Response:
    if payload is None:
        return Response(status_code=status)
    return Response(dumps(payload), status, media_type=HAL)


def error_response(err: ApiError, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(err.body()), err.status, headers=headers, media_type=HAL)


def create_app(config: SandboxConfig) -> Starlette:
    """Build the Starlette app of a fresh sandbox (``app.state.sandbox``) for ``config``."""
    sandbox = MollieSandbox(config)

    def base_url(request: Request) -> str:
        if config.public_url:
            return config.public_url.rstrip("/")
        return str(request.base_url).rstrip("/")

    def authenticate(request: Request) -> Caller:
        """``Authorization: Bearer live_…|test_…``; anything else → 401 (B0)."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token or not config.accepts(token):
            raise ApiError(401)
        mode = "live" if token.startswith("live_") else "test"
        return Caller(api_key=token, mode=mode, base=base_url(request))

    def api(
        endpoint: str, run: Handler, *, parse: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a sync provider handler: auth, idempotency key (POST only), fault, lock."""

        async def handle(request: Request) -> Response:
            logged = sandbox.log_request(
                endpoint, request.method, request.url.path, request.path_params.get("payment_id")
            )
            response = await answer(request)
            logged.status = response.status_code
            return response

        async def answer(request: Request) -> Response:
            try:
                caller = authenticate(request)
            except ApiError as err:
                return error_response(err)
            body = await request.body()
            key = request.headers.get("idempotency-key") if request.method == "POST" else None
            if key:
                print_ = fingerprint(request.method, request.url.path, request.url.query, body)
                try:
                    replay = sandbox.idempotency.begin(caller.api_key, key, print_)
                except ApiError as err:
                    return error_response(err)
                if replay is not None:
                    log.info("idempotent replay of %s %s", request.method, request.url.path)
                    return Response(
                        replay.body,
                        replay.status,
                        headers={**replay.headers, "Idempotent-Replayed": "true"},
                        media_type=replay.media_type,
                    )
            stored: StoredResponse | None = None
            try:
                response = await produce(request, caller, body)
                stored = StoredResponse(
                    response.status_code, bytes(response.body), response.media_type
                )
                return response
            finally:
                if key:
                    sandbox.idempotency.finish(caller.api_key, key, stored)

        async def produce(request: Request, caller: Caller, body: bytes) -> Response:
            try:
                fault = sandbox.take_fault(endpoint)
                if fault is not None:
                    log.info("fault on %s: %s after %d ms", endpoint, fault.status, fault.delay_ms)
                    if fault.delay_ms:
                        await asyncio.sleep(fault.delay_ms / 1000)
                    if fault.status is not None:  # answered without applying anything
                        headers = (
                            None
                            if fault.retry_after is None
                            else {"Retry-After": str(fault.retry_after)}
                        )
                        return error_response(ApiError(fault.status, fault.detail), headers)
                params = parse_body(request.headers.get("content-type"), body) if parse else {}
                async with sandbox.lock:
                    status, payload = run(request, caller, params)
                return hal_response(status, payload)
            except ApiError as err:
                return error_response(err)
            except Exception:
                log.exception("unexpected error on %s %s", request.method, request.url.path)
                return error_response(ApiError(500))

        return handle

    def query(request: Request) -> dict[str, str]:
        return dict(request.query_params)

    def create_payment(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 201, sandbox.create_payment(caller, params)

    def list_payments(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 200, sandbox.list_payments(caller, query(request))

    def get_payment(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 200, sandbox.get_payment(caller, request.path_params["payment_id"], query(request))

    def cancel_payment(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 200, sandbox.cancel_payment(caller, request.path_params["payment_id"])

    def create_refund(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 201, sandbox.create_refund(caller, request.path_params["payment_id"], params)

    def list_refunds(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        payment_id = request.path_params["payment_id"]
        return 200, sandbox.list_refunds(caller, payment_id, query(request))

    def get_refund(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        ids = request.path_params
        return 200, sandbox.get_refund(caller, ids["payment_id"], ids["refund_id"], query(request))

    def cancel_refund(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        ids = request.path_params
        sandbox.cancel_refund(caller, ids["payment_id"], ids["refund_id"])
        return 204, None

    def list_all_refunds(request: Request, caller: Caller, params: Json) -> tuple[int, Any]:
        return 200, sandbox.list_all_refunds(caller, query(request))

    # ---- checkout (the buyer) ----

    def checkout_page(payment: Payment, message: str = "") -> str:
        amount = f"{payment.currency} {money_value(payment.currency, payment.amount)}"
        rows = [
            f"<p>Payment <code>{payment.id}</code> ({payment.mode} mode): "
            f"<strong>{html.escape(amount)}</strong> — {html.escape(payment.description)}</p>",
            f'<p>Status: <strong id="status">{payment.status}</strong></p>',
        ]
        if message:
            rows.append(f"<p>{html.escape(message)}</p>")
        if payment.status in ("open", "pending"):
            buttons = "".join(
                f'<button type="submit" name="action" value="{a}">{label}</button> '
                for a, label in zip(CHECKOUT_ACTIONS, ("Pay", "Fail", "Cancel"), strict=True)
            )
            rows.append(f'<form method="post" action="/checkout/{payment.id}">{buttons}</form>')
        elif payment.redirect_url:
            rows.append(
                f'<p><a href="{html.escape(payment.redirect_url)}">Back to the shop</a></p>'
            )
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            "<title>Mollie sandbox checkout</title></head><body>"
            "<h1>Mollie sandbox checkout</h1>" + "".join(rows) + "</body></html>"
        )

    def checkout_not_found(payment_id: str) -> HTMLResponse:
        text = f"<!doctype html><p>No payment {html.escape(payment_id)}.</p>"
        return HTMLResponse(text, 404)

    async def checkout_get(request: Request) -> Response:
        async with sandbox.lock:
            payment = sandbox._payments.get(request.path_params["payment_id"])
            if payment is None:
                return checkout_not_found(request.path_params["payment_id"])
            sandbox._refresh(payment)
            return HTMLResponse(checkout_page(payment))

    async def checkout_post(request: Request) -> Response:
        """The buyer's choice: move the payment (webhook), then ``303`` back to the shop
        (``cancelUrl``, else ``redirectUrl``, on cancel). Once the payment is no longer open the
        choice changes nothing and the buyer is sent back all the same."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        action = (form.get("action") or [""])[0]
        if action not in CHECKOUT_ACTIONS:
            return HTMLResponse("<!doctype html><p>Unknown action.</p>", 400)
        async with sandbox.lock:
            payment = sandbox._payments.get(request.path_params["payment_id"])
            if payment is None:
                return checkout_not_found(request.path_params["payment_id"])
            sandbox._refresh(payment)
            if payment.status in ("open", "pending"):
                status = action
                if action == "paid" and payment.capture_mode == "manual":
                    status = "authorized"
                sandbox.move_payment(payment, status)
            target = payment.redirect_url
            if payment.status == "canceled" and payment.cancel_url:
                target = payment.cancel_url
            if target is None:
                return HTMLResponse(checkout_page(payment, "You may close this page."))
        return RedirectResponse(target, status_code=303)

    # ---- control API ----

    def control_payment(payment_id: str) -> Payment:
        payment = sandbox._payments.get(payment_id)
        if payment is None:
            raise ControlError(404, "NOT_FOUND", f"no payment {payment_id}")
        return payment

    def raw_payment(request: Request, payment: Payment) -> Json:
        base = base_url(request)
        view = sandbox.payment_view(payment, base)
        refunds = sandbox.payment_refunds(payment, canceled=True)
        view["refunds"] = [sandbox.refund_view(r, base) for r in refunds]
        return view

    async def sandbox_move_payment(request: Request) -> tuple[int, Any]:
        action = request.path_params["action"]
        if action not in CONTROL_ACTIONS:
            raise ControlError(404, "NOT_FOUND", f"action must be one of {sorted(CONTROL_ACTIONS)}")
        options = await control_body(request)
        method = options.get("method")
        if method is not None and not isinstance(method, str):
            raise ControlError(400, "PARAM_ERROR", "method must be a string")
        webhook = options.get("webhook", True)
        if not isinstance(webhook, bool):
            raise ControlError(400, "PARAM_ERROR", "webhook must be true or false")
        async with sandbox.lock:
            payment = control_payment(request.path_params["payment_id"])
            sandbox.move_payment(payment, CONTROL_ACTIONS[action], method=method, webhook=webhook)
            return 200, raw_payment(request, payment)

    async def sandbox_get_payment(request: Request) -> tuple[int, Any]:
        async with sandbox.lock:
            payment = control_payment(request.path_params["payment_id"])
            sandbox._refresh(payment)
            return 200, raw_payment(request, payment)

    async def sandbox_get_refund(request: Request) -> tuple[int, Any]:
        async with sandbox.lock:
            refund = sandbox._refunds.get(request.path_params["refund_id"])
            if refund is None:
                raise ControlError(404, "NOT_FOUND", "no such refund")
            return 200, sandbox.refund_view(refund, base_url(request))

    async def sandbox_advance_refund(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        status = options.get("status")
        if status not in REFUND_TRANSITIONS:
            raise ControlError(
                400, "PARAM_ERROR", f"status must be one of {sorted(REFUND_TRANSITIONS)}"
            )
        async with sandbox.lock:
            refund = sandbox._refunds.get(request.path_params["refund_id"])
            if refund is None:
                raise ControlError(404, "NOT_FOUND", "no such refund")
            sandbox.advance_refund(refund, status)
            return 200, sandbox.refund_view(refund, base_url(request))

    async def sandbox_balance(request: Request) -> tuple[int, Any]:
        if request.method == "POST":
            options = await control_body(request)
            low = options.get("low")
            if not isinstance(low, bool):
                raise ControlError(400, "PARAM_ERROR", "low must be true or false")
            async with sandbox.lock:
                sandbox.set_balance_low(low)
        return 200, {"low": sandbox.balance_low}

    async def sandbox_add_fault(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        endpoint = options.get("endpoint")
        status = options.get("status")
        times = options.get("times", 1)
        delay_ms = options.get("delay_ms", 0)
        detail = options.get("detail")
        retry_after = options.get("retry_after")
        if endpoint not in FAULT_ENDPOINTS:
            raise ControlError(400, "PARAM_ERROR", f"endpoint must be one of {FAULT_ENDPOINTS}")
        if status is not None and (type(status) is not int or status not in TITLES or status < 400):
            raise ControlError(
                400, "PARAM_ERROR", f"status must be one of {sorted(s for s in TITLES if s >= 400)}"
            )
        if type(times) is not int or times < 1:
            raise ControlError(400, "PARAM_ERROR", "times must be a positive integer")
        if type(delay_ms) is not int or not 0 <= delay_ms <= 60_000:
            raise ControlError(400, "PARAM_ERROR", "delay_ms must be an integer in 0..60000")
        if status is None and not delay_ms:
            raise ControlError(400, "PARAM_ERROR", "give a status, a delay_ms or both")
        if detail is not None and not isinstance(detail, str):
            raise ControlError(400, "PARAM_ERROR", "detail must be a string")
        if retry_after is not None and (status is None or not valid_retry_after(retry_after)):
            raise ControlError(
                400,
                "PARAM_ERROR",
                "retry_after (with a status) must be seconds in 0..3600 or an HTTP date",
            )
        async with sandbox.lock:
            sandbox.add_fault(Fault(endpoint, status, detail, delay_ms, times, retry_after))
            return 201, {"faults": sandbox.list_faults()}

    async def sandbox_list_faults(request: Request) -> tuple[int, Any]:
        return 200, {"faults": sandbox.list_faults()}

    async def sandbox_clear_faults(request: Request) -> tuple[int, Any]:
        async with sandbox.lock:
            sandbox.clear_faults()
        return 204, None

    async def sandbox_requests(request: Request) -> tuple[int, Any]:
        keys = ("endpoint", "method", "payment_id")
        filters = {k: v for k, v in request.query_params.items() if k in keys}
        listed = sandbox.list_requests(filters)
        return 200, {"count": len(listed), "requests": listed}

    async def sandbox_webhooks(request: Request) -> tuple[int, Any]:
        keys = ("id", "payment_id", "refund_id", "trigger", "state")
        filters = {k: v for k, v in request.query_params.items() if k in keys}
        return 200, sandbox.list_deliveries(filters)

    async def sandbox_redeliver(request: Request) -> tuple[int, Any]:
        options = await control_body(request)
        times = options.get("times", 1)
        if type(times) is not int or not 1 <= times <= 100:
            raise ControlError(400, "PARAM_ERROR", "times must be an integer in 1..100")
        payment = control_payment(str(options.get("payment_id")))
        if not payment.webhook_url:
            raise ControlError(409, "NO_WEBHOOK", f"payment {payment.id} has no webhookUrl")
        delivery = await sandbox.redeliver(payment, times)
        return 200, sandbox.delivery_view(delivery)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        headers = exc.headers if isinstance(exc, HTTPException) else None
        return error_response(ApiError(status), headers=dict(headers or {}))

    payment_path = "/v2/payments/{payment_id}"
    refund_path = payment_path + "/refunds/{refund_id}"
    routes = [
        Route("/v2/payments", api("create_payment", create_payment, parse=True), methods=["POST"]),
        Route("/v2/payments", api("list_payments", list_payments), methods=["GET"]),
        Route(payment_path, api("get_payment", get_payment), methods=["GET"]),
        Route(payment_path, api("cancel_payment", cancel_payment), methods=["DELETE"]),
        Route(
            payment_path + "/refunds",
            api("create_refund", create_refund, parse=True),
            methods=["POST"],
        ),
        Route(payment_path + "/refunds", api("list_refunds", list_refunds), methods=["GET"]),
        Route(refund_path, api("get_refund", get_refund), methods=["GET"]),
        Route(refund_path, api("cancel_refund", cancel_refund), methods=["DELETE"]),
        Route("/v2/refunds", api("list_refunds", list_all_refunds), methods=["GET"]),
        Route("/checkout/{payment_id}", checkout_get, methods=["GET"]),
        Route("/checkout/{payment_id}", checkout_post, methods=["POST"]),
        Route(
            "/sandbox/payments/{payment_id}/{action}",
            control(sandbox_move_payment),
            methods=["POST"],
        ),
        Route("/sandbox/payments/{payment_id}", control(sandbox_get_payment), methods=["GET"]),
        Route("/sandbox/refunds/{refund_id}", control(sandbox_get_refund), methods=["GET"]),
        Route(
            "/sandbox/refunds/{refund_id}/advance",
            control(sandbox_advance_refund),
            methods=["POST"],
        ),
        Route("/sandbox/balance", control(sandbox_balance), methods=["GET", "POST"]),
        Route("/sandbox/faults", control(sandbox_add_fault), methods=["POST"]),
        Route("/sandbox/faults", control(sandbox_list_faults), methods=["GET"]),
        Route("/sandbox/faults", control(sandbox_clear_faults), methods=["DELETE"]),
        Route("/sandbox/requests", control(sandbox_requests), methods=["GET"]),
        Route("/sandbox/webhooks", control(sandbox_webhooks), methods=["GET"]),
        Route("/sandbox/webhooks/redeliver", control(sandbox_redeliver), methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        yield
        await sandbox.aclose()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error}, lifespan=lifespan
    )
    app.state.sandbox = sandbox
    return app
