"""HTTP models of the refunds API."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from ticketing_shared.inputs import FreeText, Line, PositiveAmount, StrictInput


class RefundItemIn(StrictInput):
    seat_id: UUID


class RefundCreate(StrictInput):
    """``{amount?, items?, reason, note?, internal_note?}``: neither amount nor items refunds
    everything that remains; ``items`` void those seats; ``amount`` alone refunds money only."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"reason": "organizer", "note": "Concert cancelled"},
                {
                    "reason": "organizer",
                    "items": [{"seat_id": "0193a3c2-7d4e-7b1a-9f2e-3c4d5e6f7a8b"}],
                },
                {"reason": "admin", "amount": 1500, "note": "Goodwill refund"},
            ]
        }
    )

    amount: PositiveAmount | None = None
    items: list[RefundItemIn] | None = Field(None, min_length=1, max_length=500)
    # who asks, in the cancellation vocabulary ('user' is reserved for buyers' own cancellations)
    reason: Literal["organizer", "admin", "other"]
    note: Line | None = Field(
        None, min_length=1, max_length=80, description="shown to the buyer (and sent to WeChat Pay)"
    )
    internal_note: FreeText | None = Field(None, max_length=2000, description="staff only")


class RefundItemOut(BaseModel):
    seat_id: UUID
    amount: int


class RefundPublic(BaseModel):
    id: UUID
    order_id: UUID
    status: str
    amount: int
    currency: str
    reason: str
    note: str | None = None
    internal_note: str | None = None
    kind: str
    items: list[RefundItemOut]
    requested_by: str
    provider: str | None = None
    provider_refund_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    cancel_requested: bool = False
    # a payment the order never kept whose refund failed: the organizer must return it by hand
    needs_action: bool = False
    created_at: datetime
    updated_at: datetime
    refunded_at: datetime | None = None


class AuditEntry(BaseModel):
    actor: str
    action: str
    from_status: str | None = None
    to_status: str | None = None
    details: dict[str, object]
    at: datetime


class RefundDetail(RefundPublic):
    audit: list[AuditEntry] = []


class EventRefund(RefundPublic):
    buyer_email: str


class EventRefundPage(BaseModel):
    items: list[EventRefund]
    next_cursor: str | None
