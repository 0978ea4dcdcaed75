"""Read side: the public shapes of orders and registrations, and the cancellation outlook."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal
from ticketing_shared.errors import NotFound
from ticketing_shared.invite_links import InviteLinks

from .. import repository as repo
from ..domain import (
    ACTIVE_REGISTRATION_STATUSES,
    REFUNDABLE_ORDER_STATUSES,
    CancellationPolicy,
    cancel_decision,
    seat_refund,
)
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


def order_public(
    order: Mapping[str, Any],
    *,
    seats: Sequence[Mapping[str, Any]],
    registrations: Sequence[Mapping[str, Any]],
    invites: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
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
        "seats": [{"id": s["id"], "status": s["status"], "position": s["position"]} for s in seats],
        "invites": [{"status": i["status"], "seat_id": i["seat_id"]} for i in invites],
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
        if reg["order_status"] == "PENDING":
            return False, "order_not_paid", None
        if reg["order_status"] == "REFUND_PENDING":
            return False, "refund_in_progress", refund
        if reg["order_status"] not in REFUNDABLE_ORDER_STATUSES:
            return False, "order_not_refundable", None
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
    return order_public(order, **await repo.order_details(conn, order_id))


async def get_order(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID
) -> dict[str, Any]:
    """The buyer's own order, or any order of a tenant one is staff of; 404 for everyone else."""
    order = await repo.get_order(conn, order_id)
    if order is None or not (
        order["buyer_id"] == principal.sub or principal.is_staff_of(order["tenant_id"])
    ):
        raise NotFound("order not found")
    return order_public(order, **await repo.order_details(conn, order_id))


async def my_orders(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID | None
) -> list[dict[str, Any]]:
    """The caller's orders (optionally of one event), newest first."""
    out = []
    for order in await repo.list_buyer_orders(conn, principal.sub, event_id):
        out.append(order_public(order, **await repo.order_details(conn, order["id"])))
    return out


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


async def event_registrations(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID, *, limit: int, offset: int
) -> list[dict[str, Any]]:
    """The organizer's list: every registration with its order's status."""
    event = await repo.get_event(conn, event_id)
    if event is None:
        raise NotFound("event not found")
    require_staff(principal, event["tenant_id"], "event")
    return [
        dict(r)
        for r in await repo.list_event_registrations(conn, event_id, limit=limit, offset=offset)
    ]


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
