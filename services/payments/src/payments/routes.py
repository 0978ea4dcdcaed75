"""HTTP routes of the payments service: checkout, attempts, provider webhooks."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from urllib.parse import parse_qs
from uuid import UUID

from fastapi import Header, Request, Response

from ticketing_shared import db
from ticketing_shared.web import FastJSONResponse, api_router

from . import mollie_flow, service, webhook_gate
from .dependencies import (
    AllTenantsPool,
    AppSettings,
    Caller,
    MollieWebhookGate,
    Pool,
    ProviderSet,
    WeChat,
)
from .providers.mollie import PAYMENT_ID, MollieError
from .providers.wechatpay import SignatureError
from .schemas import CheckoutCreate, PaymentPublic, WechatFailure

router = api_router()
log = logging.getLogger(__name__)


@router.post("/orders/{order_id}/payments", status_code=201, response_model=PaymentPublic)
async def create_payment(
    order_id: UUID,
    body: CheckoutCreate,
    principal: Caller,
    pool: Pool,
    providers: ProviderSet,
    user_agent: Annotated[str | None, Header()] = None,
) -> Any:
    """Checkout, amounts from the order itself: WeChat Pay (CNY) Native (QR) or JSAPI (inside
    WeChat); Mollie (other currencies) a ``checkout_url`` to send the buyer to."""
    if body.provider == "mollie":
        return await mollie_flow.checkout(pool, principal, order_id, mollie=providers.mollie)
    return await service.checkout(
        pool,
        principal,
        order_id,
        openid=body.openid,
        user_agent=user_agent,
        wechat=providers.wechat,
    )


@router.get("/orders/{order_id}/payments", response_model=list[PaymentPublic])
async def list_payments(order_id: UUID, principal: Caller, pool: Pool, wechat: WeChat) -> Any:
    """The payment attempts of an order."""
    async with db.transaction(pool) as conn:
        return await service.list_payments(conn, principal, order_id, wechat)


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
    request: Request, pool: AllTenantsPool, wechat: WeChat, settings: AppSettings
) -> Response:
    """WeChat Pay notifications: verified over the raw body, decrypted, applied once."""
    body = await request.body()
    try:
        note = wechat.parse_notification(dict(request.headers), body)
    except SignatureError as exc:
        log.warning(
            "payments.webhook_rejected", extra={"provider": "wechatpay", "reason": exc.message}
        )
        return FastJSONResponse({"code": "FAIL", "message": "签名验证失败"}, status_code=401)
    if note.event_type == "TRANSACTION.SUCCESS":
        # no explicit transaction: one read, then one guarded statement (see apply_wechat_payment)
        async with pool.acquire() as conn:
            await service.apply_wechat_payment(
                conn,
                note,
                mchid=wechat.config.mchid,
                appid=wechat.config.appid,
                fee_bps=settings.wechat_fee_bps,
                app_fee_bps=settings.app_fee_bps,
            )
    elif note.event_type.startswith("REFUND."):
        async with pool.acquire() as conn:  # no explicit transaction either (apply_wechat_refund)
            await service.apply_wechat_refund(conn, note, mchid=wechat.config.mchid)
    else:
        log.info("payments.webhook_ignored", extra={"event_type": note.event_type})
    return Response(status_code=204)


@router.post(
    "/webhooks/mollie",
    status_code=200,
    response_class=Response,
    responses={
        200: {"description": "Taken (whatever the id: nothing leaks)"},
        503: {"description": "Mollie could not be asked: Mollie calls again later"},
    },
)
async def mollie_webhook(
    request: Request,
    pool: AllTenantsPool,
    providers: ProviderSet,
    settings: AppSettings,
    gate: MollieWebhookGate,
) -> Response:
    """Mollie's classic webhook: ``id=tr_…`` and nothing else. The payment (and its refunds) is
    fetched from Mollie and only real changes are applied. Answers 200 to anything, known or not
    (nothing leaks), except when Mollie could not be asked: then 503, and Mollie calls again."""
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    mollie_id = (form.get("id") or [""])[0]
    if not PAYMENT_ID.match(mollie_id):
        log.warning("payments.webhook_rejected", extra={"provider": "mollie", "reason": "no id"})
        return Response(status_code=200)
    try:
        await webhook_gate.receive(  # one fetch per id at a time, spaced: see webhook_gate
            gate,
            pool,
            providers.mollie,
            mollie_id,
            fee_bps=settings.mollie_fee_bps,
            fee_fixed=settings.mollie_fee_fixed,
            app_fee_bps=settings.app_fee_bps,
        )
    except MollieError as exc:
        if exc.retryable:
            log.warning(
                "payments.mollie_unreachable", extra={"mollie_id": mollie_id, "code": exc.code}
            )
            return Response(status_code=503)
        log.error("payments.mollie_fetch_refused", extra={"mollie_id": mollie_id, "code": exc.code})
    return Response(status_code=200)
