"""HTTP routes of the payments service: checkout, attempts, provider webhooks."""

from __future__ import annotations

import logging
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Request, Response

from ticketing_shared import db
from ticketing_shared.web import FastJSONResponse

from . import service
from .dependencies import AppSettings, Caller, Pool, WeChat
from .providers.wechatpay import SignatureError
from .schemas import CheckoutCreate, PaymentPublic

router = APIRouter(prefix="/v1")
log = logging.getLogger(__name__)


@router.post("/orders/{order_id}/payments", status_code=201, response_model=PaymentPublic)
async def create_payment(
    order_id: UUID,
    body: CheckoutCreate,
    principal: Caller,
    pool: Pool,
    wechat: WeChat,
    user_agent: Annotated[str | None, Header()] = None,
) -> Any:
    """Checkout: WeChat Pay Native (QR) or JSAPI (inside WeChat), amounts from the order itself."""
    return await service.checkout(
        pool,
        principal,
        order_id,
        provider=body.provider,
        openid=body.openid,
        user_agent=user_agent,
        wechat=wechat,
    )


@router.get("/orders/{order_id}/payments", response_model=list[PaymentPublic])
async def list_payments(order_id: UUID, principal: Caller, pool: Pool, wechat: WeChat) -> Any:
    """The payment attempts of an order."""
    async with db.transaction(pool) as conn:
        return await service.list_payments(conn, principal, order_id, wechat)


@router.post("/webhooks/wechatpay", include_in_schema=True)
async def wechatpay_webhook(
    request: Request, pool: Pool, wechat: WeChat, settings: AppSettings
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
        async with db.transaction(pool) as conn:
            await service.apply_wechat_payment(
                conn,
                note,
                mchid=wechat.config.mchid,
                appid=wechat.config.appid,
                fee_bps=settings.wechat_fee_bps,
                app_fee_bps=settings.app_fee_bps,
            )
    elif note.event_type.startswith("REFUND."):
        async with db.transaction(pool) as conn:
            await service.apply_wechat_refund(conn, note, mchid=wechat.config.mchid)
    else:
        log.info("payments.webhook_ignored", extra={"event_type": note.event_type})
    return Response(status_code=204)
