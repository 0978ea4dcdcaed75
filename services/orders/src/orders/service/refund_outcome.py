"""What refunds tells orders: a refund settled (its seats released, the order refunded once nothing is left) or one that fell through (a held cancellation given back)."""

from __future__ import annotations

import logging
from uuid import UUID

import asyncpg

from ticketing_shared.contracts import (
    OrderRefundApplied,
    RefundCompleted,
    RefundStatusChanged,
    RegistrationCancelled,
)
from ticketing_shared.errors import NotFound
from ticketing_shared.writes import OutboxEvent

from .. import repository as repo
from ..domain import REFUND_NEWS_APPLIES, AuditEntry, OrderStatus, order_transition
from .common import SOURCE, cancellation_audit, emit, event_title

log = logging.getLogger(__name__)

# the refunds service's reasons → the registration's cancellation reason
_REFUND_REASONS = {
    "organizer": "organizer",
    "admin": "admin",
    "user": "user",
    "requested_by_customer": "user",
}


def _after_refunds(
    order: asyncpg.Record, refunded_amount: int, in_flight: int, *, seats_left: int | None = None
) -> OrderStatus:
    """Where a paid order stands once its refunds so far are counted: REFUNDED once all its money
    came back, or once every seat is void (fees the policy kept do not make it partial)."""
    if refunded_amount >= order["total_amount"]:
        return OrderStatus.REFUNDED
    if in_flight:
        return OrderStatus.REFUND_PENDING
    if seats_left == 0 and refunded_amount > 0:
        return OrderStatus.REFUNDED
    return OrderStatus.PARTIALLY_REFUNDED if refunded_amount > 0 else OrderStatus.PAID


async def _cancellations_fell_through(
    conn: asyncpg.Connection, order: asyncpg.Record, refund: RefundStatusChanged
) -> None:
    """The refund behind buyers' cancellations or seat returns failed (or was withdrawn): their
    registrations and seats stay, and the requests are cleared so that they may try again (the
    policy decides). The buyer hears of it from the refund's own event."""
    cleared = await repo.clear_cancellation_requests(conn, order["id"], refund.seat_ids)
    held = await repo.clear_seat_returns(conn, order["id"], refund.seat_ids)
    if not cleared and not held:
        return
    details = {
        "refund_id": str(refund.refund_id),
        "refund_status": refund.status,
        "failure_code": refund.failure_code,
    }
    who = f"refund:{refund.refund_id}"
    rows = [
        AuditEntry(
            tenant_id=order["tenant_id"],
            order_id=order["id"],
            entity="registration",
            entity_id=str(reg_id),
            actor=who,
            action="registration.cancellation_failed",
            details=details,
        )
        for reg_id in cleared
    ] + [
        AuditEntry(
            tenant_id=order["tenant_id"],
            order_id=order["id"],
            entity="invite",
            entity_id=str(invite_id),
            actor=who,
            action="seat.return_failed",
            details=details,
        )
        for invite_id in held
    ]
    await repo.audit_many(conn, rows)


async def apply_refund_status(conn: asyncpg.Connection, refund: RefundStatusChanged) -> str:
    """A refund was accepted (``pending``/``queued``/``processing`` at the provider: the order
    shows REFUND_PENDING) or failed or was canceled (the order returns to PAID or
    PARTIALLY_REFUNDED once no other refund is in flight). Seats are untouched: only a settled
    refund releases them."""
    if refund.kind != "order":
        return "ignored_not_the_orders_payment"
    order = await repo.get_order(conn, refund.order_id, for_update=True)
    if order is None:
        raise NotFound(f"refund for unknown order {refund.order_id}")
    if await repo.refund_applied(conn, refund.refund_id):
        return "ignored_already_settled"
    if refund.status in ("failed", "canceled") and refund.seat_ids:
        await _cancellations_fell_through(conn, order, refund)
    status = OrderStatus(order["status"])
    if status not in REFUND_NEWS_APPLIES:
        return "ignored"
    if refund.status in ("pending", "queued", "processing"):
        await repo.refund_in_flight(
            conn,
            refund.refund_id,
            order_id=order["id"],
            tenant_id=order["tenant_id"],
            status=refund.status,
            amount=refund.amount,
        )
    else:
        await repo.refund_landed(conn, refund.refund_id)
    target = _after_refunds(
        order, order["refunded_amount"], await repo.refunds_in_flight(conn, order["id"])
    )
    if target is OrderStatus.PARTIALLY_REFUNDED:  # unless no seat is left
        target = _after_refunds(
            order,
            order["refunded_amount"],
            0,
            seats_left=await repo.active_seat_count(conn, order["id"]),
        )
    if target == status:
        return status.value
    order_transition(status, target)
    await repo.set_order_status(conn, order["id"], expected=status.value, status=target.value)
    await repo.audit_many(
        conn,
        [
            AuditEntry.about_order(
                order["tenant_id"],
                order["id"],
                actor=f"refund:{refund.refund_id}",
                action=f"order.refund_{refund.status}",
                from_status=status.value,
                to_status=target.value,
                details={
                    "refund_id": str(refund.refund_id),
                    "amount": refund.amount,
                    "failure_code": refund.failure_code,
                },
            )
        ],
    )
    return target.value


async def _more_money_back(
    conn: asyncpg.Connection, order: asyncpg.Record, refund: RefundCompleted, refunded_amount: int
) -> str:
    """A settled refund of an order already REFUNDED (all seats void, some fees kept): it only
    raises ``refunded_amount``, audited and announced."""
    applied = OrderRefundApplied(
        order_id=order["id"],
        tenant_id=order["tenant_id"],
        refund_id=refund.refund_id,
        amount=refund.amount,
        currency=refund.currency,
        refunded_amount=refunded_amount,
        status=OrderStatus.REFUNDED.value,
        voided_seat_ids=[],
        released=0,
    )
    updated = await repo.set_order_status_audited(
        conn,
        order["id"],
        expected=OrderStatus.REFUNDED.value,
        status=OrderStatus.REFUNDED.value,
        extra={"refunded_amount": refunded_amount},
        event=OutboxEvent.of(applied, subject=order["id"], source=SOURCE),
        audit=[
            AuditEntry.about_order(
                order["tenant_id"],
                order["id"],
                actor=f"refund:{refund.refund_id}",
                action="order.refund_settled",
                from_status=OrderStatus.REFUNDED.value,
                to_status=OrderStatus.REFUNDED.value,
                details={
                    "refund_id": str(refund.refund_id),
                    "amount": refund.amount,
                    "refunded_amount": refunded_amount,
                    "voided_seats": [],
                },
            )
        ],
    )
    assert updated
    return OrderStatus.REFUNDED.value


async def apply_refund(conn: asyncpg.Connection, refund: RefundCompleted) -> str:
    """A settled refund: void its seats (all when fully refunded), cancel their registrations,
    release the seats once, and move the order to REFUNDED, PARTIALLY_REFUNDED, or still
    REFUND_PENDING while another refund is in flight."""
    if refund.kind != "order":
        log.info("orders.refund_of_rejected_payment", extra={"order_id": str(refund.order_id)})
        return "ignored_not_the_orders_payment"
    order = await repo.get_order(conn, refund.order_id, for_update=True)
    if order is None:
        raise NotFound(f"refund for unknown order {refund.order_id}")
    others_in_flight = await repo.land_applied_refund(
        conn,
        refund.refund_id,
        order_id=order["id"],
        tenant_id=order["tenant_id"],
        amount=refund.amount,
    )
    if others_in_flight is None:
        return "duplicate"
    status = OrderStatus(order["status"])
    refunded_amount = min(order["total_amount"], order["refunded_amount"] + refund.amount)
    fully = refund.fully_refunded or refunded_amount >= order["total_amount"]
    if status is OrderStatus.REFUNDED:
        # every seat was void already (the policy kept fees): more money back changes only that
        return await _more_money_back(conn, order, refund, refunded_amount)
    if status not in REFUND_NEWS_APPLIES:
        # a refund of a payment the order never kept (late/duplicate), or a replay: money only
        log.info(
            "orders.refund_not_applied_to_seats",
            extra={"order_id": str(order["id"]), "status": status.value},
        )
        return "ignored"
    seat_ids = None if fully else list(refund.voided_seat_ids)
    reason = _REFUND_REASONS.get(refund.reason, "other")
    note = refund.note or ("refund" if reason == "other" else None)
    voided: list[UUID] = []
    regs: list[UUID] = []
    invites: list[UUID] = []
    guests: list[dict[str, str]] = []
    if fully or seat_ids:
        voided, regs, invites, seats_left, guests = await repo.void_order_seats(
            conn,
            order["id"],
            order["ticket_type_id"],
            seat_ids=seat_ids,
            reason=reason,
            note=note,
            refund_id=refund.refund_id,
            buyer_id=order["buyer_id"],
        )
    else:  # money only: the seats stay as they are
        seats_left = await repo.active_seat_count(conn, order["id"])
    target = (
        OrderStatus.REFUNDED
        if fully
        else _after_refunds(order, refunded_amount, others_in_flight, seats_left=seats_left)
    )
    if target != status:
        order_transition(status, target)
    who, tenant = f"refund:{refund.refund_id}", order["tenant_id"]
    applied = OrderRefundApplied(
        order_id=order["id"],
        tenant_id=tenant,
        refund_id=refund.refund_id,
        amount=refund.amount,
        currency=refund.currency,
        refunded_amount=refunded_amount,
        status=target.value,
        voided_seat_ids=voided,
        released=len(voided),
    )
    # the order's move, its audit and its announcement: one statement (the order is locked above)
    updated = await repo.set_order_status_audited(
        conn,
        order["id"],
        expected=status.value,
        status=target.value,
        extra={"refunded_amount": refunded_amount},
        event=OutboxEvent.of(applied, subject=order["id"], source=SOURCE),
        audit=[
            AuditEntry.about_order(
                tenant,
                order["id"],
                actor=who,
                action="order.refund_settled",
                from_status=status.value,
                to_status=target.value,
                details={
                    "refund_id": str(refund.refund_id),
                    "amount": refund.amount,
                    "refunded_amount": refunded_amount,
                    "voided_seats": [str(s) for s in voided],
                },
            ),
            *cancellation_audit(tenant, order["id"], who, reason, regs, invites),
        ],
    )
    assert updated
    if guests:  # the buyer hears of the refund itself; each guest whose seat went, of that
        title = await event_title(conn, order["event_id"])
        for guest in guests:
            await emit(
                conn,
                RegistrationCancelled(
                    registration_id=UUID(guest["id"]),
                    order_id=order["id"],
                    tenant_id=tenant,
                    event_id=order["event_id"],
                    user_id=guest["user_id"],
                    email=guest["email"],
                    locale=guest["locale"],
                    event_title=title,
                    reason=reason,
                    note=refund.note,
                    refund_id=refund.refund_id,
                ),
                order["id"],
            )
    return target.value
