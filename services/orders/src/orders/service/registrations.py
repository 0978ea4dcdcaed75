"""Registrations: organizer approve/reject/cancel (refund-first for paid seats), buyer cancel by policy."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal
from ticketing_shared.contracts import (
    RegistrationApproved,
    RegistrationCancellationRequested,
    RegistrationCancelled,
    RegistrationRejected,
)
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import (
    ACTIVE_REGISTRATION_STATUSES,
    RegistrationStatus,
    registration_transition,
)
from ..errors import (
    CancellationNotAllowed,
    CancellationWindowClosed,
    OrderNotPaid,
    RefundRequired,
    RegistrationChanged,
    not_now,
)
from ..schemas import StaffAction
from . import views
from .common import actor, emit, now, require_staff, staff_reason


async def _load(
    conn: asyncpg.Connection, principal: Principal, registration_id: UUID
) -> asyncpg.Record:
    reg = await repo.get_registration(conn, registration_id, for_update=True)
    if reg is None or not (
        reg["user_id"] == principal.sub or principal.is_member_of(reg["tenant_id"])
    ):
        raise NotFound("registration not found")
    return reg


def _event_data(reg: asyncpg.Record) -> dict[str, Any]:
    return {
        "registration_id": reg["id"],
        "order_id": reg["order_id"],
        "tenant_id": reg["tenant_id"],
        "event_id": reg["event_id"],
        "user_id": reg["user_id"],
        "email": reg["email"],
        "locale": reg["locale"],
        "event_title": reg["event_title"],
    }


def _paid(reg: asyncpg.Record) -> bool:
    """Tied to an order whose money was taken (and not all of it given back)."""
    return reg["order_id"] is not None and reg["order_status"] in (
        "PAID",
        "REFUND_PENDING",
        "PARTIALLY_REFUNDED",
    )


async def approve(
    conn: asyncpg.Connection, principal: Principal, registration_id: UUID
) -> dict[str, Any]:
    """Organizer approval of a PENDING registration."""
    reg = await _load(conn, principal, registration_id)
    require_staff(principal, reg["tenant_id"], "registration")
    registration_transition(RegistrationStatus(reg["status"]), RegistrationStatus.APPROVED)
    if (
        await repo.set_registration_status(
            conn, registration_id, expected=["PENDING"], status="APPROVED"
        )
        is None
    ):
        raise RegistrationChanged("registration changed concurrently")
    await repo.audit(
        conn,
        tenant_id=reg["tenant_id"],
        order_id=reg["order_id"],
        entity="registration",
        entity_id=registration_id,
        actor=actor(principal),
        action="registration.approved",
        from_status=reg["status"],
        to_status="APPROVED",
    )
    await emit(conn, RegistrationApproved(**_event_data(reg)), reg["order_id"] or registration_id)
    return await views.get_registration(conn, principal, registration_id)


async def reject(
    conn: asyncpg.Connection, principal: Principal, registration_id: UUID, body: StaffAction
) -> dict[str, Any]:
    """Organizer rejection of a PENDING registration; a paid seat needs a refund first."""
    reg = await _load(conn, principal, registration_id)
    require_staff(principal, reg["tenant_id"], "registration")
    if _paid(reg):
        raise RefundRequired(
            "this registration is paid: issue a refund for its seat; the seat is released when it settles"
        )
    registration_transition(RegistrationStatus(reg["status"]), RegistrationStatus.REJECTED)
    if (
        await repo.set_registration_status(
            conn, registration_id, expected=["PENDING"], status="REJECTED"
        )
        is None
    ):
        raise RegistrationChanged("registration changed concurrently")
    if reg["order_id"] is None:
        await repo.release_inventory(conn, reg["ticket_type_id"], 1)
    await repo.audit(
        conn,
        tenant_id=reg["tenant_id"],
        order_id=reg["order_id"],
        entity="registration",
        entity_id=registration_id,
        actor=actor(principal),
        action="registration.rejected",
        from_status=reg["status"],
        to_status="REJECTED",
        details={"note": body.note},
    )
    await emit(conn, RegistrationRejected(**_event_data(reg)), reg["order_id"] or registration_id)
    return await views.get_registration(conn, principal, registration_id)


async def cancel(
    conn: asyncpg.Connection, principal: Principal, registration_id: UUID, body: StaffAction
) -> tuple[int, dict[str, Any]]:
    """The registrant cancels per the policy; staff cancel free seats (paid ones: refund first)."""
    reg = await _load(conn, principal, registration_id)
    if reg["user_id"] == principal.sub:
        return await _cancel_by_registrant(conn, principal, reg)
    require_staff(principal, reg["tenant_id"], "registration")
    if reg["order_id"] is not None:
        if _paid(reg):
            raise RefundRequired(
                "this registration is paid: issue a refund for its seat; the seat is released when it settles"
            )
        raise OrderNotPaid(
            "this registration belongs to an unpaid order: the buyer cancels it, or it expires"
        )
    reason = body.reason or staff_reason(principal, reg["tenant_id"])
    await _cancel_free(conn, reg, who=actor(principal), reason=reason, note=body.note)
    return 200, await views.get_registration(conn, principal, registration_id)


async def _cancel_free(
    conn: asyncpg.Connection, reg: asyncpg.Record, *, who: str, reason: str, note: str | None
) -> None:
    registration_transition(RegistrationStatus(reg["status"]), RegistrationStatus.CANCELLED)
    updated = await repo.set_registration_status(
        conn,
        reg["id"],
        expected=sorted(ACTIVE_REGISTRATION_STATUSES),
        status="CANCELLED",
        extra={
            "cancelled_at": now(),
            "cancellation_reason": reason,
            "cancellation_reason_note": note,
        },
    )
    if updated is None:
        raise RegistrationChanged("registration changed concurrently")
    await repo.release_inventory(conn, reg["ticket_type_id"], 1)
    await repo.audit(
        conn,
        tenant_id=reg["tenant_id"],
        order_id=None,
        entity="registration",
        entity_id=reg["id"],
        actor=who,
        action="registration.cancelled",
        from_status=reg["status"],
        to_status="CANCELLED",
        details={"reason": reason, "note": note, "released": 1},
    )
    await emit(conn, RegistrationCancelled(**_event_data(reg), reason=reason, note=note), reg["id"])


async def _cancel_by_registrant(
    conn: asyncpg.Connection, principal: Principal, reg: asyncpg.Record
) -> tuple[int, dict[str, Any]]:
    can, reason, refund = views.cancel_outlook(reg, now())
    if not can:
        if reason == "cancellation_window_closed":
            raise CancellationWindowClosed("the cancellation deadline for this event has passed")
        if reason == "cancellation_not_allowed":
            raise CancellationNotAllowed(
                "the organizer's policy does not allow cancelling this registration"
            )
        raise not_now(reason, f"this registration cannot be cancelled now ({reason})")
    if reg["order_id"] is None:
        await _cancel_free(conn, reg, who=actor(principal), reason="user", note=None)
        return 200, await views.get_registration(conn, principal, reg["id"])
    assert refund is not None and reg["seat_id"] is not None
    if refund == 0:  # the policy gives nothing back (fees take the whole share): cancelled now
        voided, *_ = await repo.void_order_seats(
            conn, reg["order_id"], reg["ticket_type_id"], seat_ids=[reg["seat_id"]], reason="user"
        )
        await repo.audit(
            conn,
            tenant_id=reg["tenant_id"],
            order_id=reg["order_id"],
            entity="registration",
            entity_id=reg["id"],
            actor=actor(principal),
            action="registration.cancelled",
            from_status=reg["status"],
            to_status="CANCELLED",
            details={"reason": "user", "refund_amount": 0, "released": len(voided)},
        )
        await emit(conn, RegistrationCancelled(**_event_data(reg), reason="user"), reg["order_id"])
        return 200, await views.get_registration(conn, principal, reg["id"])
    # paid: the seat stays until the refund settles; ask the refunds service for the policy amount
    await repo.mark_cancellation_requested(conn, reg["id"])
    await repo.audit(
        conn,
        tenant_id=reg["tenant_id"],
        order_id=reg["order_id"],
        entity="registration",
        entity_id=reg["id"],
        actor=actor(principal),
        action="registration.cancellation_requested",
        from_status=reg["status"],
        to_status=reg["status"],
        details={"refund_amount": refund, "seat_id": str(reg["seat_id"])},
    )
    await emit(
        conn,
        RegistrationCancellationRequested(
            **_event_data(reg),
            seat_id=reg["seat_id"],
            amount=refund,
            currency=reg["order_currency"].strip(),
            reason="user",
        ),
        reg["order_id"],
    )
    return 202, await views.get_registration(conn, principal, reg["id"])
