"""What refunds learns from the others: the orders it may refund, a buyer's cancellation or seat return to refund, a late payment to give back, and the provider's answers turned into refund states and ``refund.*`` events. Each runs in the consumer's transaction, scoped to the tenant of its event."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import outbox
from ticketing_shared.contracts import (
    OrderCreated,
    OrderPaid,
    OrderPaymentRejected,
    PaymentRefundUpdated,
    RefundCompleted,
    RefundFailed,
    RefundStatusChanged,
    RegistrationCancellationRequested,
    SeatReturnRequested,
)
from ticketing_shared.errors import NotFound
from ticketing_shared.writes import OutboxEvent

from . import repository as repo
from .domain import (
    AuditEntry,
    RefundReason,
    RefundStatus,
    can_move,
)
from .errors import OrderUnknown
from .service import create, event_fields, order_money

log = logging.getLogger(__name__)
SOURCE = "refunds"
# what the audit of the provider's news keeps: the refund's fields after the move
_NEWS_DETAILS = ("provider_refund_id", "amount", "failure_code", "failure_message")


async def on_orders_created(conn: asyncpg.Connection, orders: list[OrderCreated]) -> None:
    await repo.insert_orders(
        conn,
        [
            {**data.model_dump(mode="json"), "seat_ids": [str(s.seat_id) for s in data.seats]}
            for data in orders
        ],
    )


async def on_order_paid(conn: asyncpg.Connection, data: OrderPaid) -> None:
    if await repo.get_order(conn, data.order_id) is None:
        raise OrderUnknown(f"order.paid before order.created for {data.order_id}")
    await repo.mark_order_paid(
        conn,
        data.order_id,
        amount=data.total_amount,
        transaction_id=data.transaction_id,
        paid_at=data.paid_at,
    )


async def on_order_ended(conn: asyncpg.Connection, order_id: UUID) -> None:
    await repo.mark_order_cancelled(conn, order_id)


async def on_cancellation_requested(
    conn: asyncpg.Connection, data: RegistrationCancellationRequested
) -> str:
    """A buyer cancelled a paid seat within the policy: refund the policy amount, void the seat."""
    assert data.order_id is not None
    return await _seat_refund(
        conn,
        data.order_id,
        data.seat_id,
        data.amount,
        actor=data.user_id,
        internal_note=f"buyer cancellation of registration {data.registration_id}",
    )


async def on_seat_return_requested(conn: asyncpg.Connection, data: SeatReturnRequested) -> str:
    """A buyer gives back a gift seat nobody redeemed: refund the policy amount, void the seat."""
    return await _seat_refund(
        conn,
        data.order_id,
        data.seat_id,
        data.amount,
        actor=data.buyer_id,
        internal_note=f"buyer returned the gift seat of invite {data.invite_id}",
    )


async def _seat_refund(
    conn: asyncpg.Connection,
    order_id: UUID,
    seat_id: UUID,
    amount: int,
    *,
    actor: str,
    internal_note: str,
) -> str:
    order = await repo.get_order(conn, order_id, for_update=True)
    if order is None:
        raise OrderUnknown(f"cancellation for unknown order {order_id}")
    if order["status"] != "PAID":
        log.warning("refunds.cancellation_for_unpaid_order", extra={"order_id": str(order_id)})
        return "ignored_not_paid"
    money = await order_money(conn, order)
    if seat_id in money.seats_taken:
        return "ignored_seat_already_refunded"  # asked twice: the first request stands
    amount = min(amount, money.remaining)
    if amount <= 0:
        log.warning(
            "refunds.cancellation_without_money",
            extra={"order_id": str(order_id), "amount": amount},
        )
        return "ignored_nothing_to_refund"
    await create(
        conn,
        order,
        amount=amount,
        items=[(seat_id, amount)],
        reason=RefundReason.USER.value,
        note=None,
        internal_note=internal_note,
        actor=actor,
    )
    return "created"


async def on_payment_rejected(conn: asyncpg.Connection, data: OrderPaymentRejected) -> str:
    """Money the order could not keep goes back in full, once per payment."""
    order = await repo.get_order(conn, data.order_id, for_update=True)
    if order is None:
        raise OrderUnknown(f"rejected payment for unknown order {data.order_id}")
    refund = await create(
        conn,
        order,
        amount=data.amount,
        items=[],
        reason=RefundReason.OTHER.value,
        note=data.note or data.reason.replace("_", " "),
        internal_note=f"{data.reason}: transaction {data.transaction_id}",
        actor="system",
        kind="rejected_payment",
        payment_id=data.payment_id,
    )
    return "created" if refund is not None else "duplicate"


async def on_provider_update(conn: asyncpg.Connection, data: PaymentRefundUpdated) -> str:
    """The provider's answer moves the refund along its states; anything else is ignored (a
    redelivery, or news older than what is known)."""
    refund = await repo.lock_for_provider_update(conn, data.refund_id)
    if refund is None:
        raise NotFound(f"provider update for unknown refund {data.refund_id}")
    current, target = RefundStatus(refund["status"]), RefundStatus(data.status)
    fields: dict[str, Any] = {"provider": data.provider}
    if data.provider_refund_id:
        fields["provider_refund_id"] = data.provider_refund_id
    if current == target or not can_move(current, target):
        if current == target and fields.keys() - {"provider"}:
            await repo.update_refund(conn, refund["id"], fields)
        return "ignored"
    fields["status"] = target.value
    if target is RefundStatus.FAILED:
        fields["failure_code"] = data.failure_code or "failed"
        fields["failure_message"] = data.failure_message or "the provider could not refund"
    if target is RefundStatus.REFUNDED:
        fields["refunded_at"] = data.at
    event: RefundCompleted | RefundStatusChanged
    if target is RefundStatus.REFUNDED:
        total = refund["refunded_by_others"] + (
            refund["amount"] if refund["kind"] == "order" else 0
        )
        event = RefundCompleted(
            **event_fields(refund),
            voided_seat_ids=list(refund["seat_ids"]),
            fully_refunded=refund["kind"] == "order" and total >= refund["paid_amount"],
            refunded_total=total,
            refunded_at=data.at,
            buyer_email=refund["buyer_email"],
            buyer_locale=refund["buyer_locale"],
            event_title=refund["event_title"],
        )
    else:
        event = RefundStatusChanged(
            **event_fields(refund),
            status=target.value,
            previous_status=current.value,
            failure_code=fields.get("failure_code", refund["failure_code"]),
            failure_message=fields.get("failure_message", refund["failure_message"]),
            seat_ids=list(refund["seat_ids"]),
            buyer_email=refund["buyer_email"],
            buyer_locale=refund["buyer_locale"],
            event_title=refund["event_title"],
        )
    # the move, its audit and its announcement: one statement, under the lock taken above
    after = {**refund, **fields}
    await repo.record_provider_update(
        conn,
        refund["id"],
        fields,
        entry=AuditEntry.of(
            refund,
            actor=f"provider:{data.provider}",
            action=f"refund.{target.value}",
            from_status=current.value,
            to_status=target.value,
            details={k: after[k] for k in _NEWS_DETAILS},
        ),
        event=OutboxEvent.of(event, subject=refund["order_id"], source=SOURCE),
    )
    if target is RefundStatus.FAILED:  # and, for the buyer's e-mail, a failure on its own
        await outbox.emit(
            conn,
            RefundFailed(
                **event_fields(refund),
                failure_code=fields["failure_code"],
                failure_message=fields["failure_message"],
                seat_ids=list(refund["seat_ids"]),
                buyer_email=refund["buyer_email"],
                buyer_locale=refund["buyer_locale"],
                event_title=refund["event_title"],
            ),
            subject=refund["order_id"],
            source=SOURCE,
        )
    return target.value
