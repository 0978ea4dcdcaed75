"""What a payment means for an order: paid (its seats confirmed and its buyer told), or, too late or too little, rejected and refunded."""

from __future__ import annotations

import logging

import asyncpg

from ticketing_shared.contracts import (
    OrderPaid,
    OrderPaymentRejected,
    PaymentSucceeded,
)
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import AuditEntry, OrderStatus, RegistrationStatus, order_transition
from .common import emit, event_title

log = logging.getLogger(__name__)


async def apply_payment(conn: asyncpg.Connection, payment: PaymentSucceeded) -> str:
    """Payment success: PENDING → PAID; late payment revives or asks for a refund. Returns the outcome."""
    order = await repo.get_order(conn, payment.order_id, for_update=True)
    if order is None:
        log.error("orders.payment_for_unknown_order", extra={"order_id": str(payment.order_id)})
        raise NotFound(f"payment for unknown order {payment.order_id}")
    status = order["status"]
    if (
        payment.amount != order["total_amount"]
        or payment.currency.upper() != order["currency"].strip()
    ):
        await _reject_payment(
            conn,
            order,
            payment,
            reason="amount_mismatch",
            note=f"paid {payment.amount} {payment.currency}, order is {order['total_amount']} {order['currency']}",
        )
        return "rejected_amount_mismatch"
    if status == "PENDING":
        await _mark_paid(conn, order, payment, revived=False)
        return "paid"
    if order["transaction_id"] == payment.transaction_id:
        return "duplicate"  # the same payment told twice: already applied
    if status == "CANCELLED":
        if order["transaction_id"] is None and await repo.take_inventory(
            conn, order["ticket_type_id"], order["quantity"]
        ):
            await repo.reactivate_seats(conn, order["id"])
            await _mark_paid(conn, order, payment, revived=True)
            return "revived"
        await _reject_payment(conn, order, payment, reason="late_payment", note="late payment")
        return "rejected_late"
    # already paid with another transaction: a second payment for the same order
    await _reject_payment(
        conn, order, payment, reason="duplicate_payment", note="duplicate payment"
    )
    return "rejected_duplicate"


async def _mark_paid(
    conn: asyncpg.Connection, order: asyncpg.Record, payment: PaymentSucceeded, *, revived: bool
) -> None:
    event = await repo.get_event(conn, order["event_id"])
    assert event is not None
    order_transition(OrderStatus(order["status"]), OrderStatus.PAID)
    updated = await repo.set_order_status(
        conn,
        order["id"],
        expected=order["status"],
        status="PAID",
        extra={
            "paid_at": payment.paid_at,
            "transaction_id": payment.transaction_id,
            "payment_id": payment.payment_id,
            "payment_provider": payment.provider,
            "payment_method": payment.payment_method,
            "transaction_fee": payment.transaction_fee,
            "app_fee": payment.app_fee,
            "cancelled_at": None,
            "cancellation_reason": None,
        },
    )
    assert updated is not None
    reg_status = (
        RegistrationStatus.PENDING if event["require_approval"] else RegistrationStatus.APPROVED
    )
    if revived:
        reg = await repo.revive_buyer_registration(conn, order["id"], status=reg_status.value)
        opened = await repo.set_invites_status(
            conn, order["id"], from_statuses=["VOID", "LOCKED"], to="OPEN"
        )
    else:
        reg = await repo.promote_buyer_registration(conn, order["id"], status=reg_status.value)
        opened = await repo.set_invites_status(
            conn, order["id"], from_statuses=["LOCKED"], to="OPEN"
        )
    who, tenant = f"payment:{payment.provider}", order["tenant_id"]
    await repo.audit_many(
        conn,
        [
            AuditEntry.about_order(
                tenant,
                order["id"],
                actor=who,
                action="order.late_payment_revived" if revived else "order.paid",
                from_status=order["status"],
                to_status="PAID",
                details={
                    "transaction_id": payment.transaction_id,
                    "amount": payment.amount,
                    "provider": payment.provider,
                    "payment_method": payment.payment_method,
                    "transaction_fee": payment.transaction_fee,
                    "app_fee": payment.app_fee,
                },
            ),
            *(
                [
                    AuditEntry(
                        tenant_id=tenant,
                        order_id=order["id"],
                        entity="registration",
                        entity_id=str(reg["id"]),
                        actor=who,
                        action="registration.paid",
                        to_status=reg_status.value,
                        details={},
                    )
                ]
                if reg
                else []
            ),
            *[
                AuditEntry(
                    tenant_id=tenant,
                    order_id=order["id"],
                    entity="invite",
                    entity_id=str(i["id"]),
                    actor=who,
                    action="invite.opened",
                    to_status="OPEN",
                    details={},
                )
                for i in opened
            ],
        ],
    )
    await emit(
        conn,
        OrderPaid(
            order_id=order["id"],
            tenant_id=tenant,
            buyer_id=order["buyer_id"],
            buyer_email=order["buyer_email"],
            buyer_locale=order["buyer_locale"],
            quantity=order["quantity"],
            total_amount=order["total_amount"],
            currency=order["currency"].strip(),
            transaction_id=payment.transaction_id,
            paid_at=payment.paid_at,
            event_title=event["title"],
            invite_ids=await repo.invite_ids(conn, order["id"], status="OPEN"),
            revived=revived,
        ),
        order["id"],
    )


async def _reject_payment(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    payment: PaymentSucceeded,
    *,
    reason: str,
    note: str,
) -> None:
    """Money the order cannot keep: record it and ask for a full refund of that payment."""
    log.warning("orders.payment_rejected", extra={"order_id": str(order["id"]), "reason": reason})
    await repo.audit(
        conn,
        tenant_id=order["tenant_id"],
        order_id=order["id"],
        entity="order",
        entity_id=order["id"],
        actor=f"payment:{payment.provider}",
        action="order.payment_rejected",
        details={
            "reason": reason,
            "transaction_id": payment.transaction_id,
            "amount": payment.amount,
            "currency": payment.currency,
            "note": note,
        },
    )
    await emit(
        conn,
        OrderPaymentRejected(
            order_id=order["id"],
            tenant_id=order["tenant_id"],
            payment_id=payment.payment_id,
            transaction_id=payment.transaction_id,
            provider=payment.provider,
            amount=payment.amount,
            currency=payment.currency,
            reason=reason,
            note=note,
            buyer_email=order["buyer_email"],
            buyer_locale=order["buyer_locale"],
            event_title=await event_title(conn, order["event_id"]),
        ),
        order["id"],
    )
