"""Order lifecycle: buyer cancel, expiry, payment outcome (incl. late payment), refund settlement."""

from __future__ import annotations

import logging
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal
from ticketing_shared.contracts import (
    OrderCancelled,
    OrderExpired,
)
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import AuditEntry, OrderStatus, order_transition
from ..errors import OrderChanged, OrderNotPending
from .common import actor, cancellation_audit, emit, event_title, now

log = logging.getLogger(__name__)


async def _release_order(
    conn: asyncpg.Connection, order: asyncpg.Record, *, who: str, reason: str, action: str
) -> asyncpg.Record:
    """PENDING → CANCELLED: registrations cancelled, invites and seats void, seats released."""
    order_transition(OrderStatus(order["status"]), OrderStatus.CANCELLED)
    updated = await repo.set_order_status(
        conn,
        order["id"],
        expected="PENDING",
        status="CANCELLED",
        extra={"cancelled_at": now(), "cancellation_reason": reason},
    )
    if updated is None:  # the caller holds the row lock, so this is a bug, not a race
        raise OrderChanged("order changed concurrently")
    voided, regs, invites, _, _ = await repo.void_order_seats(
        conn, order["id"], order["ticket_type_id"], seat_ids=None, reason=reason
    )
    tenant = order["tenant_id"]
    await repo.audit_many(
        conn,
        [
            AuditEntry.about_order(
                tenant,
                order["id"],
                actor=who,
                action=action,
                from_status="PENDING",
                to_status="CANCELLED",
                details={"reason": reason, "released": len(voided)},
            ),
            *cancellation_audit(tenant, order["id"], who, reason, regs, invites),
        ],
    )
    return updated


async def cancel_pending_order(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID
) -> None:
    """The buyer gives up an unpaid order: seats released at once, reason ``user``."""
    order = await repo.get_order(conn, order_id, for_update=True)
    if order is None or order["buyer_id"] != principal.sub:
        raise NotFound("order not found")
    if order["status"] != "PENDING":
        raise OrderNotPending(
            f"only a PENDING order can be cancelled by its buyer (this one is {order['status']})"
        )
    await _release_order(conn, order, who=actor(principal), reason="user", action="order.cancelled")
    await emit(
        conn,
        OrderCancelled(
            order_id=order_id,
            tenant_id=order["tenant_id"],
            reason="user",
            buyer_email=order["buyer_email"],
            buyer_locale=order["buyer_locale"],
            event_title=await event_title(conn, order["event_id"]),
        ),
        order_id,
    )


async def expire_due_orders(conn: asyncpg.Connection, *, limit: int) -> int:
    """Cancel PENDING orders past ``expires_at`` (several workers never expire one twice)."""
    orders = await repo.due_expired_orders(conn, limit=limit)
    for order in orders:
        await _release_order(
            conn, order, who="system:expiry", reason="payment_abandoned", action="order.expired"
        )
        await emit(
            conn,
            OrderExpired(
                order_id=order["id"],
                tenant_id=order["tenant_id"],
                buyer_email=order["buyer_email"],
                buyer_locale=order["buyer_locale"],
                event_title=await event_title(conn, order["event_id"]),
            ),
            order["id"],
        )
    return len(orders)
