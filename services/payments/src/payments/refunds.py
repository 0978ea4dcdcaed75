"""A refund's life at payments, whatever the provider: queued from refunds' request, withdrawn
on its cancellation, and moved on by what the provider says, through one function, :func:`record`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import outbox
from ticketing_shared.contracts import (
    PaymentRefundUpdated,
    RefundCancelRequested,
    RefundRequested,
)
from ticketing_shared.writes import OutboxEvent

from . import repository as repo
from .domain import REFUND_OPEN, refund_failure_message

log = logging.getLogger(__name__)
SOURCE = "payments"


@dataclass(frozen=True)
class RefundChange:
    """What a provider says of one of our refunds: its status and what comes with it."""

    status: str
    provider_refund_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    at: datetime | None = None

    @classmethod
    def failed(cls, code: str, message: str = "", provider: str = "") -> RefundChange:
        """A refusal, with the advice the buyer and the organizer get."""
        return cls(
            "failed",
            failure_code=code,
            failure_message=refund_failure_message(code, message, provider),
        )

    def columns(self) -> dict[str, Any]:
        """The ``provider_refunds`` columns this change sets."""
        fields: dict[str, Any] = {"status": self.status}
        if self.provider_refund_id:
            fields["provider_refund_id"] = self.provider_refund_id
        if self.status == "failed":
            fields["failure_code"], fields["failure_message"] = (
                self.failure_code,
                self.failure_message,
            )
        if self.status == "refunded":
            fields["settled_at"] = self.at or datetime.now(UTC)
        return fields

    def event(
        self, refund_id: UUID, order_id: UUID, tenant_id: str, provider: str
    ) -> PaymentRefundUpdated:
        """``payment.refund_updated``: the change, announced to refunds."""
        return PaymentRefundUpdated(
            refund_id=refund_id,
            order_id=order_id,
            tenant_id=tenant_id,
            provider=provider,
            status=self.status,
            provider_refund_id=self.provider_refund_id,
            failure_code=self.failure_code,
            failure_message=self.failure_message,
            at=self.at or datetime.now(UTC),
        )


async def record(
    conn: asyncpg.Connection,
    refund: asyncpg.Record,
    change: RefundChange,
    *,
    notification: dict[str, Any] | None = None,
    outcome: str = "",
) -> bool:
    """Apply ``change`` to ``refund`` and announce it, once: only when it is news (the status
    moves on from an open one, or the provider's refund id is learned). With ``notification``
    (the provider's message that said it), that message is recorded in the same statement.
    False when there was nothing to apply."""
    learned_id = bool(change.provider_refund_id) and not refund["provider_refund_id"]
    expected = [s for s in REFUND_OPEN if s != change.status or learned_id]
    if notification is None and refund["status"] not in expected:
        return False  # nothing new (statuses only move forward, so the row read tells)
    if not change.provider_refund_id and refund["provider_refund_id"]:
        change = RefundChange(
            **{**change.__dict__, "provider_refund_id": refund["provider_refund_id"]}
        )
    event = change.event(
        refund["refund_id"], refund["order_id"], refund["tenant_id"], refund["provider"]
    )
    return await repo.move_refund(
        conn,
        refund["refund_id"],
        change.columns(),
        expected=expected,
        event=OutboxEvent.of(event, subject=refund["order_id"], source=SOURCE),
        notification=notification,
        outcome=outcome,
    )


async def on_refund_requested(conn: asyncpg.Connection, data: RefundRequested) -> str:
    """Queue the provider call for a refund (made after the commit, retried with the same
    ``out_refund_no``); a refund of an order without a paid transaction fails at once."""
    payment = await repo.refundable_payment(conn, data.order_id, data.payment_id)
    if payment is None:
        log.error("payments.refund_without_payment", extra={"order_id": str(data.order_id)})
        event = RefundChange.failed("no_payment").event(
            data.refund_id, data.order_id, data.tenant_id, "unknown"
        )
        await outbox.emit(conn, event, subject=data.order_id, source=SOURCE)
        return "no_payment"
    known = not await repo.insert_refund(
        conn,
        {
            "refund_id": data.refund_id,
            "order_id": data.order_id,
            "tenant_id": data.tenant_id,
            "payment_id": payment["id"],
            "provider": payment["provider"],
            "out_refund_no": data.refund_id.hex,
            "amount": data.amount,
            "currency": data.currency,
            "note": data.note,
        },
    )
    if known:
        return "duplicate"
    await repo.add_task(
        conn,
        task_id=outbox.new_event_id(),
        kind="refund",
        provider=payment["provider"],
        reference=data.refund_id.hex,
        payload={"refund_id": str(data.refund_id)},
        tenant_id=data.tenant_id,
    )
    return "queued"


async def on_refund_cancel_requested(conn: asyncpg.Connection, data: RefundCancelRequested) -> str:
    """Withdraw a refund. Not sent to the provider yet: the task is withdrawn and the refund is
    ``canceled`` now. Sent to Mollie and still ``pending``/``queued`` there (or being sent right
    now): Mollie is asked to cancel it, after this commit. WeChat Pay has no way back: once sent,
    the refund carries on."""
    refund = await repo.get_refund(conn, refund_id=data.refund_id, for_update=True)
    if refund is None or refund["status"] not in ("pending", "queued"):
        return "too_late"
    if refund["provider_refund_id"] is None and await repo.cancel_task(
        conn, kind="refund", provider=refund["provider"], reference=refund["out_refund_no"]
    ):
        await record(conn, refund, RefundChange("canceled"))
        return "canceled"
    if refund["provider"] != "mollie":
        return "too_late"
    await repo.add_task(
        conn,
        task_id=outbox.new_event_id(),
        kind="cancel_refund",
        provider="mollie",
        reference=refund["out_refund_no"],
        payload={"refund_id": str(data.refund_id)},
        tenant_id=data.tenant_id,
    )
    return "cancel_queued"
