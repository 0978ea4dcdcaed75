"""HTTP models of the payments API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class CheckoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: Literal["wechatpay", "mollie"]
    openid: str | None = Field(None, min_length=1, max_length=128)


class JsapiParams(BaseModel):
    appId: str
    timeStamp: str
    nonceStr: str
    package: str
    signType: str
    paySign: str


class PaymentPublic(BaseModel):
    payment_id: UUID
    order_id: UUID
    provider: str
    payment_method: str
    out_trade_no: str
    status: str
    amount: int
    currency: str
    transaction_id: str | None = None
    paid_at: datetime | None = None
    created_at: datetime
    code_url: str | None = None
    jsapi: JsapiParams | None = None
    checkout_url: str | None = None
    # the provider's own id of this attempt (Mollie's tr_…), for support conversations
    provider_payment_id: str | None = None
