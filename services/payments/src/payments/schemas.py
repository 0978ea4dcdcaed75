"""HTTP models of the payments API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ticketing_shared.inputs import StrictInput


class CheckoutCreate(StrictInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"provider": "mollie"},
                {"provider": "wechatpay"},
                {"provider": "wechatpay", "openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
            ]
        }
    )

    provider: Literal["wechatpay", "mollie"]
    # what WeChat issues: letters, digits, '-' and '_'
    openid: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,128}$")


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


class WechatFailure(BaseModel):
    """How WeChat Pay expects a refused notification to be answered."""

    code: str
    message: str
