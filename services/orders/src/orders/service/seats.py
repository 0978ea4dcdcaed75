"""A buyer gives back a gift seat nobody redeemed: the same policy as a registrant's own
cancellation (window, fees), a refund of that seat's share, then seat and invite VOID and the
seat released once, when the refund settles. A redeemed seat is its guest's to cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal
from ticketing_shared.contracts import SeatReturnRequested
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import (
    AuditEntry,
    CancellationPolicy,
    cancel_decision,
    paid_seat_blocked,
    seat_refund,
)
from ..errors import CancellationNotAllowed, CancellationWindowClosed, not_now
from .common import actor, emit, now


def return_outlook(
    order: Any, seat: Any, invite: Any | None, policy: dict[str, Any], starts_at: datetime
) -> tuple[bool, str | None, int | None]:
    """(can_return, reason when not, refund amount) of one of the order's seats for its buyer."""
    if invite is None:
        return False, "seat_has_registration", None
    amount = seat_refund(
        policy=CancellationPolicy.from_dict(policy),
        total_amount=order["total_amount"],
        transaction_fee=order["transaction_fee"],
        app_fee=order["app_fee"],
        seats=order["quantity"],
        seat_index=seat["position"] - 1,
        already_refunded=order["refunded_amount"],
    )
    if seat["status"] != "ACTIVE" or invite["status"] == "VOID":
        return False, "seat_not_active", None
    if invite["status"] == "REDEEMED":
        return False, "invite_redeemed", amount
    blocked = paid_seat_blocked(order["status"])
    if blocked is not None:
        reason, quoted = blocked
        return False, reason, amount if quoted else None
    if invite["return_requested_at"] is not None:
        return False, "return_requested", amount
    decision = cancel_decision(
        CancellationPolicy.from_dict(policy), event_starts_at=starts_at, now=now()
    )
    if not decision.allowed:
        return False, decision.reason, amount
    return True, None, amount


async def return_seat(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID, seat_id: UUID
) -> int:
    """The buyer returns a gift seat. 202 when its refund was asked for (the seat goes when it
    settles), 200 when the policy gives nothing back (the seat goes at once)."""
    order = await repo.get_order(conn, order_id, for_update=True)
    if order is None or order["buyer_id"] != principal.sub:
        raise NotFound("order not found")
    seat = await repo.order_seat(conn, order_id, seat_id)
    if seat is None:
        raise NotFound("seat not found")
    invite = await repo.lock_seat_invite(conn, seat_id)
    terms = await repo.buyer_terms(conn, order)
    can, reason, amount = return_outlook(
        order, seat, invite, terms["cancellation_policy"], terms["starts_at"]
    )
    if not can:
        if reason == "cancellation_window_closed":
            raise CancellationWindowClosed("the cancellation deadline for this event has passed")
        if reason == "cancellation_not_allowed":
            raise CancellationNotAllowed("the organizer's policy does not allow giving seats back")
        raise not_now(reason, _WHY.get(reason or "", _WHY[""]))
    assert invite is not None and amount is not None
    who = actor(principal)

    def seat_entry(action: str, to_status: str, **details: object) -> AuditEntry:
        return AuditEntry(
            tenant_id=order["tenant_id"],
            order_id=order_id,
            entity="seat",
            entity_id=str(seat_id),
            actor=who,
            action=action,
            from_status="ACTIVE",
            to_status=to_status,
            details={**details, "invite_id": str(invite["id"])},
        )

    if amount == 0:  # nothing to give back: the seat goes now
        voided, *_ = await repo.void_order_seats(
            conn, order_id, order["ticket_type_id"], seat_ids=[seat_id], reason="user"
        )
        await repo.audit_many(
            conn, [seat_entry("seat.returned", "VOID", refund_amount=0, released=len(voided))]
        )
        return 200
    await repo.mark_return_requested(conn, invite["id"])
    await repo.audit_many(
        conn, [seat_entry("seat.return_requested", "ACTIVE", refund_amount=amount)]
    )
    await emit(
        conn,
        SeatReturnRequested(
            order_id=order_id,
            tenant_id=order["tenant_id"],
            seat_id=seat_id,
            invite_id=invite["id"],
            amount=amount,
            currency=order["currency"].strip(),
            buyer_id=order["buyer_id"],
            buyer_email=order["buyer_email"],
            buyer_locale=order["buyer_locale"],
            event_title=terms["title"],
        ),
        order_id,
    )
    return 202


_WHY = {
    "seat_has_registration": "this seat holds the buyer's own registration: cancel that instead",
    "seat_not_active": "this seat is no longer part of the order",
    "invite_redeemed": "a guest holds this seat: only they can cancel it",
    "order_not_paid": "the order is not paid",
    "refund_in_progress": "a refund of this order is in progress: try again once it has settled",
    "order_not_refundable": "this order can no longer be refunded",
    "return_requested": "this seat is already being given back",
    "": "this seat cannot be given back now",
}
