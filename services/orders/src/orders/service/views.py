"""Read side: the public shapes of orders and registrations, and the cancellation outlook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import paging
from ticketing_shared.auth import Principal
from ticketing_shared.errors import NotFound
from ticketing_shared.invite_links import InviteLinks

from .. import repository as repo
from ..domain import (
    ACTIVE_REGISTRATION_STATUSES,
    REFUNDABLE_ORDER_STATUSES,
    CancellationPolicy,
    cancel_decision,
    paid_seat_blocked,
    seat_refund,
)
from . import seats
from .common import now, require_staff, require_tenant_member


def ticket_type_public(tt: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": tt["id"],
        "event_id": tt["event_id"],
        "name": tt["name"],
        "max_quantity": tt["max_quantity"],
        "current_quantity": tt["current_quantity"],
        "available": tt["max_quantity"] - tt["current_quantity"],
        "max_unpaid_per_buyer": tt["max_unpaid_per_buyer"],
        "price_tiers": sorted(tt["price_tiers"], key=lambda t: t["quantity"]),
        "organizer_registration": tt["organizer_registration"],
        "use_tenant_cancellation_policy": tt["use_tenant_cancellation_policy"],
        "cancellation_policy": tt["cancellation_policy"],
    }


def event_public(
    event: Mapping[str, Any], ticket_types: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    out = {
        k: event[k]
        for k in (
            "id",
            "tenant_id",
            "title",
            "starts_at",
            "require_approval",
            "currency",
            "status",
            "template_id",
        )
    }
    out["currency"] = out["currency"].strip()
    if ticket_types is not None:
        out["ticket_types"] = [ticket_type_public(t) for t in ticket_types]
    return out


def _seat(
    seat: Mapping[str, Any],
    order: Mapping[str, Any],
    returns: Mapping[Any, tuple[bool, str | None, int | None]] | None,
) -> dict[str, Any]:
    out = {"id": seat["id"], "status": seat["status"], "position": seat["position"]}
    if returns is not None and seat["id"] in returns:
        can, reason, amount = returns[seat["id"]]
        out["can_return"] = can
        out["return_unavailable_reason"] = reason
        if amount is not None:
            out["return_quote"] = {"amount": amount, "currency": order["currency"].strip()}
    return out


def order_public(
    order: Mapping[str, Any],
    *,
    seats: Sequence[Mapping[str, Any]],
    registrations: Sequence[Mapping[str, Any]],
    invites: Sequence[Mapping[str, Any]],
    returns: Mapping[Any, tuple[bool, str | None, int | None]] | None = None,
) -> dict[str, Any]:
    """The order as its buyer and the tenant's staff see it; ``returns`` (the buyer's own view)
    says, per gift seat, whether it can be given back and for how much."""
    refundable = 0
    if order["status"] in REFUNDABLE_ORDER_STATUSES:
        refundable = order["total_amount"] - order["refunded_amount"]
    return {
        "id": order["id"],
        "event_id": order["event_id"],
        "ticket_type_id": order["ticket_type_id"],
        "status": order["status"],
        "quantity": order["quantity"],
        "total_amount": order["total_amount"],
        "refunded_amount": order["refunded_amount"],
        "currency": order["currency"].strip(),
        "expires_at": order["expires_at"],
        "paid_at": order["paid_at"],
        "transaction_id": order["transaction_id"],
        "payment_provider": order["payment_provider"],
        "payment_method": order["payment_method"],
        "created_at": order["created_at"],
        "registrations": [
            {"id": r["id"], "status": r["status"], "user_id": r["user_id"], "seat_id": r["seat_id"]}
            for r in registrations
        ],
        "seats": [_seat(s, order, returns) for s in seats],
        "invites": [
            {
                "status": i["status"],
                "seat_id": i["seat_id"],
                "return_requested": i.get("return_requested_at") is not None,
            }
            for i in invites
        ],
        "refund": {"refunded_amount": order["refunded_amount"], "refundable_amount": refundable},
    }


def cancel_outlook(reg: Mapping[str, Any], at: datetime) -> tuple[bool, str | None, int | None]:
    """(can_cancel, reason when not, refund amount for a paid seat) for the registrant."""
    policy = CancellationPolicy.from_dict(reg["cancellation_policy"])
    paid = reg["order_id"] is not None
    refund: int | None = None
    if paid and reg.get("total_amount") is not None and reg.get("seat_position") is not None:
        refund = seat_refund(
            policy=policy,
            total_amount=reg["total_amount"],
            transaction_fee=reg["transaction_fee"],
            app_fee=reg["app_fee"],
            seats=reg["order_quantity"],
            seat_index=reg["seat_position"] - 1,
            already_refunded=reg["refunded_amount"],
        )
    if reg["status"] not in ACTIVE_REGISTRATION_STATUSES:
        return False, "registration_not_active", None
    if paid:
        blocked = paid_seat_blocked(reg["order_status"])
        if blocked is not None:
            reason, quoted = blocked
            return False, reason, refund if quoted else None
        if reg["cancellation_requested_at"] is not None:
            return False, "cancellation_requested", refund
    decision = cancel_decision(policy, event_starts_at=reg["event_starts_at"], now=at)
    if not decision.allowed:
        return False, decision.reason, refund
    return True, None, refund


def registration_public(reg: Mapping[str, Any], *, at: datetime | None = None) -> dict[str, Any]:
    can_cancel, reason, refund = cancel_outlook(reg, at or now())
    currency = (reg.get("order_currency") or "").strip()
    return {
        "id": reg["id"],
        "event_id": reg["event_id"],
        "ticket_type_id": reg["ticket_type_id"],
        "order_id": reg["order_id"],
        "order_status": reg.get("order_status"),
        "seat_id": reg["seat_id"],
        "user_id": reg["user_id"],
        "status": reg["status"],
        "cancellation_reason": reg["cancellation_reason"],
        "cancellation_reason_note": reg["cancellation_reason_note"],
        "cancelled_at": reg["cancelled_at"],
        "refund_id": reg.get("refund_id"),
        "cancellation_requested": reg["cancellation_requested_at"] is not None,
        "can_cancel": can_cancel,
        "cancel_unavailable_reason": reason,
        "refund_quote": {"amount": refund, "currency": currency} if refund is not None else None,
        "cancellation_policy": reg["cancellation_policy"],
        "policy_source": reg["policy_source"],
        "created_at": reg["created_at"],
    }


async def load_order(conn: asyncpg.Connection, order_id: UUID) -> dict[str, Any]:
    order = await repo.get_order(conn, order_id)
    if order is None:
        raise NotFound("order not found")
    details = await repo.order_details(conn, order_id)
    return order_public(
        order,
        seats=details["seats"],
        registrations=details["registrations"],
        invites=details["invites"],
    )


async def get_order(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID
) -> dict[str, Any]:
    """The buyer's own order (with what each gift seat would give back), or any order of a
    tenant one is staff of; 404 for everyone else."""
    order = await repo.get_order(conn, order_id)
    if order is None or not (
        order["buyer_id"] == principal.sub or principal.is_staff_of(order["tenant_id"])
    ):
        raise NotFound("order not found")
    details = await repo.order_details(conn, order_id)
    returns = None
    if order["buyer_id"] == principal.sub and details["invites"]:
        terms = await repo.buyer_terms(conn, order)
        by_seat = {i["seat_id"]: i for i in details["invites"]}
        returns = {
            s["id"]: seats.return_outlook(
                order,
                s,
                by_seat.get(s["id"]),
                terms["cancellation_policy"],
                terms["starts_at"],
            )
            for s in details["seats"]
        }
    return order_public(
        order,
        seats=details["seats"],
        registrations=details["registrations"],
        invites=details["invites"],
        returns=returns,
    )


async def my_orders(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID | None,
    *,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the caller's orders (optionally of one event), newest first."""
    rows = await repo.list_buyer_orders(
        conn, principal.sub, event_id, limit=limit, before=paging.decode(cursor)
    )
    orders, next_cursor = paging.page(rows, limit)
    details = await repo.orders_details(conn, [o["id"] for o in orders])
    items = [
        order_public(
            o,
            seats=details[o["id"]]["seats"],
            registrations=details[o["id"]]["registrations"],
            invites=details[o["id"]]["invites"],
        )
        for o in orders
    ]
    return {"items": items, "next_cursor": next_cursor}


async def get_registration(
    conn: asyncpg.Connection, principal: Principal, registration_id: UUID
) -> dict[str, Any]:
    """The registrant's own registration, or one of a tenant one is staff of."""
    reg = await repo.get_registration(conn, registration_id)
    if reg is None or not (
        reg["user_id"] == principal.sub or principal.is_staff_of(reg["tenant_id"])
    ):
        raise NotFound("registration not found")
    return registration_public(reg)


async def _staff_event(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID
) -> asyncpg.Record:
    event = await repo.get_event(conn, event_id)
    if event is None:
        raise NotFound("event not found")
    require_tenant_member(principal, event["tenant_id"], "event")
    require_staff(principal, event["tenant_id"], "event")
    return event


async def event_registrations(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID,
    filters: repo.RegistrationFilter,
    *,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """The organizer's list: a page of the event's registrations (each with its order's status
    and the refund that cancelled it), the cursor of the next, and how many match in all."""
    await _staff_event(conn, principal, event_id)
    await repo.plan_for_these_values(conn)
    rows = await repo.list_event_registrations(
        conn, event_id, filters, limit=limit, after=paging.decode(cursor)
    )
    items, next_cursor = paging.page(rows, limit)
    total = await repo.count_event_registrations(conn, event_id, filters)
    return {"items": [dict(r) for r in items], "next_cursor": next_cursor, "total": total}


async def check_export(conn: asyncpg.Connection, principal: Principal, event_id: UUID) -> None:
    """Whether the caller may export the event's registrations (owner/admin)."""
    await _staff_event(conn, principal, event_id)


async def tenant_events(
    conn: asyncpg.Connection,
    principal: Principal,
    tenant_id: str,
    *,
    status: str | None,
    starts_from: datetime | None,
    starts_to: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the tenant's events, by start (tenant members)."""
    require_tenant_member(principal, tenant_id, "tenant")
    rows = await repo.list_tenant_events(
        conn,
        tenant_id,
        status=status,
        starts_from=starts_from,
        starts_to=starts_to,
        limit=limit,
        after=paging.decode(cursor),
    )
    items, next_cursor = paging.page(rows, limit, key=("starts_at", "id"))
    return {"items": [event_public(e) for e in items], "next_cursor": next_cursor}


async def tenant_templates(
    conn: asyncpg.Connection,
    principal: Principal,
    tenant_id: str,
    *,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the tenant's event templates, oldest first (tenant members)."""
    require_tenant_member(principal, tenant_id, "tenant")
    rows = await repo.list_tenant_templates(
        conn, tenant_id, limit=limit, after=paging.decode(cursor)
    )
    items, next_cursor = paging.page(rows, limit)
    return {"items": [dict(t) for t in items], "next_cursor": next_cursor}


async def event_audit(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID,
    *,
    limit: int,
    cursor: int | None,
) -> dict[str, Any]:
    """The event's catalog and policy history, oldest first (tenant staff)."""
    event = await _staff_event(conn, principal, event_id)
    rows = await repo.event_audit(conn, event, limit=limit, after=cursor)
    items = [dict(r) for r in rows[:limit]]
    next_cursor = str(items[-1]["id"]) if len(rows) > limit else None
    return {"items": items, "next_cursor": next_cursor}


async def order_audit(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID
) -> list[dict[str, Any]]:
    """Every change of an order and its seats, registrations and invites."""
    order = await repo.get_order(conn, order_id)
    if order is None:
        raise NotFound("order not found")
    require_tenant_member(principal, order["tenant_id"], "order")
    require_staff(principal, order["tenant_id"], "order")
    return [dict(r) for r in await repo.order_audit(conn, order_id)]


async def order_invites(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID, links: InviteLinks
) -> list[dict[str, Any]]:
    """The buyer's invite links (tokens, derived again: none is stored) of an order."""
    order = await repo.get_order(conn, order_id)
    if order is None or order["buyer_id"] != principal.sub:
        raise NotFound("order not found")
    details = await repo.order_details(conn, order_id)
    return [
        {
            "token": links.token(i["id"]),
            "status": i["status"],
            "seat_id": i["seat_id"],
            "redeemed_by": i["redeemed_by"],
        }
        for i in details["invites"]
    ]
