"""HTTP routes of the payments service: checkout, attempts, provider webhooks."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import parse_qs
from uuid import UUID

import asyncpg
from fastapi import Header, Request, Response

from ticketing_shared import catchup, db
from ticketing_shared.errors import PROBLEM_JSON, NotFound
from ticketing_shared.web import FastJSONResponse, api_router

from . import service, webhook_gate
from .dependencies import (
    AllTenantsPool,
    AppSettings,
    Caller,
    MollieWebhookGate,
    PaymentFlows,
    Pool,
)
from .errors import MalformedWebhook, ProviderNotAsked
from .providers.mollie import PAYMENT_ID, MollieError
from .providers.wechatpay import SignatureError
from .schemas import CheckoutCreate, PaymentPublic, WechatFailure
from .settings import Settings

router = api_router()
log = logging.getLogger(__name__)
# PAYMENT_ID as the OpenAPI document's pattern
MOLLIE_ID_PATTERN = f"^{PAYMENT_ID.pattern}$"


@router.post("/orders/{order_id}/payments", status_code=201, response_model=PaymentPublic)
async def create_payment(
    order_id: UUID,
    body: CheckoutCreate,
    principal: Caller,
    pool: Pool,
    flows: PaymentFlows,
    settings: AppSettings,
    user_agent: Annotated[str | None, Header()] = None,
) -> Any:
    """Checkout, amounts from the order itself: WeChat Pay (CNY) Native (QR) or JSAPI (inside
    WeChat); Mollie (other currencies) a ``checkout_url`` to send the buyer to. Right after the
    purchase it waits (briefly) for payments to learn the order."""

    async def start() -> Any:
        return await flows.of(body.provider).checkout(
            pool, principal, order_id, openid=body.openid, user_agent=user_agent
        )

    return await _once_learned(pool, order_id, settings, start)


@router.get("/orders/{order_id}/payments", response_model=list[PaymentPublic])
async def list_payments(
    order_id: UUID, principal: Caller, pool: Pool, flows: PaymentFlows, settings: AppSettings
) -> Any:
    """The payment attempts of an order."""

    async def read() -> Any:
        async with db.transaction(pool) as conn:
            return await service.list_payments(conn, principal, order_id, flows.wechatpay.client)

    return await _once_learned(pool, order_id, settings, read)


async def _once_learned(
    pool: asyncpg.Pool, order_id: UUID, settings: Settings, call: Callable[[], Awaitable[Any]]
) -> Any:
    """``call()``; if it found no such order, again once payments has learned the order (a
    client's read of its own write: the purchase it just made), else its 404 stands."""
    try:
        return await call()
    except NotFound:
        if not await catchup.order_learned(pool, order_id, within=settings.order_wait_ms / 1000):
            raise
    return await call()


@router.post(
    "/webhooks/wechatpay",
    status_code=204,
    response_class=Response,
    responses={
        204: {"description": "Taken (applied, or already known)"},
        401: {
            "description": "Not WeChat Pay's (signature, serial or time window), as WeChat Pay expects it",
            "model": WechatFailure,
        },
    },
)
async def wechatpay_webhook(
    request: Request, pool: AllTenantsPool, flows: PaymentFlows
) -> Response:
    """WeChat Pay notifications: verified over the raw body, decrypted, applied once."""
    body = await request.body()
    try:
        note = flows.wechatpay.client.parse_notification(dict(request.headers), body)
    except SignatureError as exc:
        log.warning(
            "payments.webhook_rejected", extra={"provider": "wechatpay", "reason": exc.message}
        )
        return FastJSONResponse({"code": "FAIL", "message": "签名验证失败"}, status_code=401)
    # no explicit transaction: one read, then one guarded statement (see on_notification)
    async with pool.acquire() as conn:
        await flows.wechatpay.on_notification(conn, note)
    return Response(status_code=204)


def _mollie_id(body: bytes) -> str:
    """The payment id of Mollie's webhook body, form-encoded ``id=tr_…``: ``400`` unless there is
    exactly one id, and it is well-formed (an id nobody has is well-formed too)."""
    try:
        form = parse_qs(
            body.decode("ascii"), keep_blank_values=True, strict_parsing=True, max_num_fields=10
        )
    except ValueError:  # not form-encoded (non-ASCII bytes included)
        form = {}
    ids = form.get("id", [])
    if len(ids) != 1 or not PAYMENT_ID.fullmatch(ids[0]):
        log.warning("payments.webhook_rejected", extra={"provider": "mollie", "reason": "no id"})
        raise MalformedWebhook("the body must be form-encoded id=tr_… (one payment id)")
    return ids[0]


@router.post(
    "/webhooks/mollie",
    status_code=200,
    response_class=Response,
    responses={
        200: {"description": "Taken (whatever the payment id: whether we know it never leaks)"},
        400: {
            "description": "Not Mollie's webhook: no payment id, or a malformed one",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
        503: {
            "description": "Mollie could not be asked: Mollie calls again later",
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "properties": {"id": {"type": "string", "pattern": MOLLIE_ID_PATTERN}},
                        "required": ["id"],
                    }
                }
            },
        }
    },
)
async def mollie_webhook(
    request: Request,
    pool: AllTenantsPool,
    flows: PaymentFlows,
    gate: MollieWebhookGate,
) -> Response:
    """Mollie's classic webhook: ``id=tr_…`` and nothing else. The payment (and its refunds) is
    fetched from Mollie and only real changes are applied. Answers 200 to any well-formed id,
    known or not (nothing leaks), 400 to a body without one; 503 when Mollie could not be asked,
    and Mollie calls again."""
    mollie_id = _mollie_id(await request.body())
    try:
        # one fetch per id at a time, spaced: see webhook_gate
        await webhook_gate.receive(gate, pool, flows.mollie, mollie_id)
    except MollieError as exc:
        if exc.retryable:
            log.warning(
                "payments.mollie_unreachable", extra={"mollie_id": mollie_id, "code": exc.code}
            )
            raise ProviderNotAsked(f"Mollie: {exc.message}") from exc
        log.error("payments.mollie_fetch_refused", extra={"mollie_id": mollie_id, "code": exc.code})
    return Response(status_code=200)
