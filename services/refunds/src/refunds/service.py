"""What people ask of the refunds service: organizers' refunds, their lists, withdrawing one.
What refunds learns from the other services is in :mod:`refunds.news`.

Every use case runs in one transaction scoped to a tenant (row-level security): the API's to the
caller's tenants, a consumer's to the tenant of the event it applies. A refund request locks its
order's row, so concurrent requests for one order are checked one after the other and can never
refund more than was paid together.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import idempotency, outbox, paging
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import (
    RefundCancelRequested,
    RefundRequested,
)
from ticketing_shared.errors import NotFound

from . import repository as repo
from .domain import (
    CANCELABLE,
    AuditEntry,
    OrderMoney,
    RefundStatus,
    plan_refund,
)
from .errors import OrderNotPaid, RefundNotCancelable, StaffOnly
from .schemas import RefundPublic

log = logging.getLogger(__name__)
SOURCE = "refunds"


def _order_for_staff(principal: Principal, order: asyncpg.Record | None) -> asyncpg.Record:
    if order is None:
        raise NotFound("order not found")
    if not principal.is_staff_of(order["tenant_id"]):
        raise StaffOnly("refunds need the tenant's owner or admin role")
    return order


async def order_money(conn: asyncpg.Connection, order: asyncpg.Record) -> OrderMoney:
    pending_total, seats = await repo.order_money(conn, order["order_id"])
    return OrderMoney(
        paid_amount=order["paid_amount"],
        seat_ids=list(order["seat_ids"]),
        refunded_or_pending=pending_total,
        seats_taken=frozenset(seats),
    )


async def create(
    conn: asyncpg.Connection,
    order: asyncpg.Record,
    *,
    amount: int,
    items: list[tuple[UUID, int]],
    reason: str,
    note: str | None,
    internal_note: str | None,
    actor: str,
    kind: str = "order",
    payment_id: UUID | None = None,
) -> asyncpg.Record | None:
    """Write the refund (pending), its audit entry and ``refund.requested``."""
    refund_id = outbox.new_event_id()
    refund = await repo.insert_refund(
        conn,
        {
            "id": refund_id,
            "order_id": order["order_id"],
            "tenant_id": order["tenant_id"],
            "kind": kind,
            "payment_id": payment_id,
            "amount": amount,
            "currency": order["currency"].strip(),
            "reason": reason,
            "note": note,
            "internal_note": internal_note,
            "requested_by": actor,
        },
        items,
    )
    if refund is None:
        return None
    await repo.audit(
        conn,
        AuditEntry.of(
            refund,
            actor=actor,
            action="refund.requested",
            from_status=None,
            to_status=RefundStatus.PENDING.value,
            details={
                "amount": amount,
                "currency": refund["currency"].strip(),
                "reason": reason,
                "note": note,
                "internal_note": internal_note,
                "kind": kind,
                "payment_id": str(payment_id) if payment_id else None,
                "items": [{"seat_id": str(s), "amount": a} for s, a in items],
            },
        ),
    )
    await outbox.emit(
        conn,
        RefundRequested(
            refund_id=refund_id,
            order_id=order["order_id"],
            tenant_id=order["tenant_id"],
            amount=amount,
            currency=refund["currency"].strip(),
            reason=reason,
            note=note,
            kind=kind,
            seat_ids=[s for s, _ in items],
            payment_id=payment_id,
        ),
        subject=order["order_id"],
        source=SOURCE,
    )
    return refund


async def request_refund(
    conn: asyncpg.Connection,
    principal: Principal,
    order_id: UUID,
    *,
    amount: int | None,
    seat_ids: list[UUID] | None,
    reason: str,
    note: str | None,
    internal_note: str | None,
    idem: idempotency.IdempotentRequest,
) -> tuple[int, dict[str, Any]]:
    """An organizer's refund (in a transaction scoped to the caller's tenants). Returns (status,
    body); a replayed key returns the first answer."""
    order = _order_for_staff(principal, await repo.get_order(conn, order_id, for_update=True))
    stored = await idempotency.begin(
        conn,
        scope=idem.scope,
        key=idem.key,
        fingerprint=idem.fingerprint,
        tenant=order["tenant_id"],
    )
    if stored is not None:
        return stored.status, stored.body
    if order["status"] != "PAID":
        raise OrderNotPaid(
            "only a paid order can be refunded"
            + (" (this one is not paid yet)" if order["status"] == "PENDING" else "")
        )
    plan = plan_refund(await order_money(conn, order), amount=amount, seat_ids=seat_ids)
    refund = await create(
        conn,
        order,
        amount=plan.amount,
        items=plan.items,
        reason=reason,
        note=note,
        internal_note=internal_note,
        actor=principal.sub,
    )
    assert refund is not None
    body = await _public(conn, refund)
    await idempotency.complete(conn, scope=idem.scope, key=idem.key, status=201, body=body)
    return 201, body


async def order_paid(conn: asyncpg.Connection, order_id: UUID) -> bool:
    """Whether refunds has heard that ``order_id`` was paid (in a transaction scoped to that
    order)."""
    return await repo.order_is_paid(conn, order_id)


async def list_refunds(
    conn: asyncpg.Connection, principal: Principal, order_id: UUID
) -> list[dict[str, Any]]:
    """Every refund of an order (in a transaction scoped to that order), for the tenant's staff
    and for the order's own buyer (who does not see the organizer's internal note). A member of
    the tenant is refused; anyone else finds no such order."""
    order = await repo.get_order(conn, order_id)
    if order is None:
        raise NotFound("order not found")
    staff = principal.is_staff_of(order["tenant_id"])
    if not staff and order["buyer_id"] != principal.sub:
        _order_for_staff(principal, order if order["tenant_id"] in principal.roles else None)
    refunds = await repo.list_refunds(conn, order_id)
    items = await repo.items_of(conn, [r["id"] for r in refunds])
    shaped = [_shape(r, items[r["id"]]) for r in refunds]
    if not staff:
        for refund in shaped:
            refund["internal_note"] = None
    return shaped


async def event_refunds(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID,
    *,
    status: str | None,
    only_needing_action: bool,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the refunds of an event's orders, oldest first, each with its buyer's e-mail
    address and whether it needs the organizer (tenant owners and admins). Refunds knows an
    event by its orders only: one without any is not found."""
    tenant = await repo.event_tenant(conn, event_id)
    if tenant is None:
        raise NotFound("no order of this event is known")
    if not principal.is_staff_of(tenant):
        raise StaffOnly("refunds need the tenant's owner or admin role")
    rows = await repo.list_event_refunds(
        conn,
        event_id,
        status=status,
        only_needing_action=only_needing_action,
        limit=limit,
        after=paging.decode(cursor),
    )
    page, next_cursor = paging.page(rows, limit)
    items = await repo.items_of(conn, [r["id"] for r in page])
    return {
        "items": [{**_shape(r, items[r["id"]]), "buyer_email": r["buyer_email"]} for r in page],
        "next_cursor": next_cursor,
    }


async def get_refund(
    conn: asyncpg.Connection, principal: Principal, refund_id: UUID
) -> dict[str, Any]:
    refund = await repo.get_refund(conn, refund_id)
    if refund is None:
        raise NotFound("refund not found")
    if not principal.is_staff_of(refund["tenant_id"]):
        raise StaffOnly("refunds need the tenant's owner or admin role")
    body = await _public(conn, refund)
    body["audit"] = [dict(a) for a in await repo.audit_trail(conn, refund_id)]
    return body


async def cancel_refund(
    conn: asyncpg.Connection, principal: Principal, refund_id: UUID
) -> dict[str, Any]:
    """Withdraw a refund still ``pending`` or ``queued``. The provider side decides: payments
    cancels it if it has not gone through yet and the refund becomes ``canceled``; otherwise it
    carries on. Answers 202 with ``cancel_requested``."""
    refund = await repo.get_refund(conn, refund_id, for_update=True)
    if refund is None:
        raise NotFound("refund not found")
    if not principal.is_staff_of(refund["tenant_id"]):
        raise StaffOnly("refunds need the tenant's owner or admin role")
    status = RefundStatus(refund["status"])
    if status not in CANCELABLE:
        raise RefundNotCancelable(f"a {status.value} refund can no longer be canceled")
    if refund["cancel_requested_at"] is None:
        refund = await repo.update_refund(
            conn, refund_id, {"cancel_requested_at": datetime.now(UTC)}
        )
        await repo.audit(
            conn,
            AuditEntry.of(
                refund,
                actor=principal.sub,
                action="refund.cancel_requested",
                from_status=status.value,
                to_status=status.value,
            ),
        )
        await outbox.emit(
            conn,
            RefundCancelRequested(**event_fields(refund)),
            subject=refund["order_id"],
            source=SOURCE,
        )
    return await _public(conn, refund)


def needs_action(refund: Mapping[str, Any]) -> bool:
    """Money we must give back and could not: a payment the order never kept (late, duplicate)
    whose refund failed. Nothing retries it (one refund per such payment), so the organizer must
    return it by hand; a failed refund of the order's own payment is retried by whoever asked."""
    return bool(
        refund["status"] == RefundStatus.FAILED.value and refund["kind"] == "rejected_payment"
    )


def event_fields(refund: asyncpg.Record) -> dict[str, Any]:
    return {
        "refund_id": refund["id"],
        "order_id": refund["order_id"],
        "tenant_id": refund["tenant_id"],
        "amount": refund["amount"],
        "currency": refund["currency"].strip(),
        "reason": refund["reason"],
        "note": refund["note"],
        "kind": refund["kind"],
    }


def _shape(refund: asyncpg.Record, items: list[asyncpg.Record]) -> dict[str, Any]:
    return {
        "id": refund["id"],
        "order_id": refund["order_id"],
        "status": refund["status"],
        "amount": refund["amount"],
        "currency": refund["currency"].strip(),
        "reason": refund["reason"],
        "note": refund["note"],
        "internal_note": refund["internal_note"],
        "kind": refund["kind"],
        "items": [{"seat_id": i["seat_id"], "amount": i["amount"]} for i in items],
        "requested_by": refund["requested_by"],
        "provider": refund["provider"],
        "provider_refund_id": refund["provider_refund_id"],
        "failure_code": refund["failure_code"],
        "failure_message": refund["failure_message"],
        "cancel_requested": refund["cancel_requested_at"] is not None,
        "needs_action": needs_action(refund),
        "created_at": refund["created_at"],
        "updated_at": refund["updated_at"],
        "refunded_at": refund["refunded_at"],
    }


async def _public(conn: asyncpg.Connection, refund: asyncpg.Record) -> dict[str, Any]:
    """The refund as the API shows it, in JSON types (it is also the stored idempotent reply)."""
    items = (await repo.items_of(conn, [refund["id"]]))[refund["id"]]
    return RefundPublic.model_validate(_shape(refund, items)).model_dump(mode="json")
