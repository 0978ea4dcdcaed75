"""Orders, their moves (audited and announced in one statement), the refunds in flight, and
the inventory invariant. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import writes
from ticketing_shared.db import set_clause
from ticketing_shared.writes import OutboxEvent

from ..domain import AuditEntry
from .audit import AUDIT

# ---------------------------------------------------------------------------------------- orders


async def get_order(
    conn: asyncpg.Connection, order_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM orders WHERE id = $1{lock}", order_id)


async def order_details(
    conn: asyncpg.Connection, order_id: UUID
) -> dict[str, list[asyncpg.Record]]:
    seats = await conn.fetch(
        "SELECT id, status, position FROM seats WHERE order_id = $1 ORDER BY position", order_id
    )
    regs = await conn.fetch(
        "SELECT id, status, user_id, seat_id FROM registrations WHERE order_id = $1 ORDER BY created_at, id",
        order_id,
    )
    invites = await conn.fetch(
        """
        SELECT i.id, i.status, i.seat_id, i.redeemed_by, i.return_requested_at
        FROM invites i JOIN seats s ON s.id = i.seat_id
        WHERE i.order_id = $1 ORDER BY s.position
        """,
        order_id,
    )
    return {"seats": seats, "registrations": regs, "invites": invites}


async def orders_details(
    conn: asyncpg.Connection, order_ids: list[UUID]
) -> dict[UUID, dict[str, list[asyncpg.Record]]]:
    """``order_details()`` of many orders in three statements (a page of a buyer's orders)."""
    out: dict[UUID, dict[str, list[asyncpg.Record]]] = {
        o: {"seats": [], "registrations": [], "invites": []} for o in order_ids
    }
    for part, sql in (
        (
            "seats",
            "SELECT order_id, id, status, position FROM seats WHERE order_id = ANY($1::uuid[])"
            " ORDER BY order_id, position",
        ),
        (
            "registrations",
            "SELECT order_id, id, status, user_id, seat_id FROM registrations"
            " WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, created_at, id",
        ),
        (
            "invites",
            "SELECT i.order_id, i.id, i.status, i.seat_id, i.redeemed_by, i.return_requested_at"
            " FROM invites i JOIN seats s ON s.id = i.seat_id"
            " WHERE i.order_id = ANY($1::uuid[]) ORDER BY i.order_id, s.position",
        ),
    ):
        for row in await conn.fetch(sql, order_ids):
            out[row["order_id"]][part].append(row)
    return out


async def list_buyer_orders(
    conn: asyncpg.Connection,
    buyer_id: str,
    event_id: UUID | None,
    *,
    limit: int,
    before: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """A page of the buyer's orders, newest first (``limit + 1`` rows)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM orders WHERE buyer_id = $1 AND ($2::uuid IS NULL OR event_id = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4::uuid))
        ORDER BY created_at DESC, id DESC LIMIT $5
        """,
        buyer_id,
        event_id,
        before[0] if before else None,
        before[1] if before else None,
        limit + 1,
    )
    return found


async def set_order_status(
    conn: asyncpg.Connection,
    order_id: UUID,
    *,
    expected: str,
    status: str,
    extra: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    """Guarded transition: None when the order is no longer in ``expected`` (handle explicitly)."""
    assignments, values = set_clause(extra or {}, first=4)
    return await conn.fetchrow(
        f"""
        UPDATE orders SET {assignments}status = $3, updated_at = now()
        WHERE id = $1 AND status = $2 RETURNING *
        """,
        order_id,
        expected,
        status,
        *values,
    )


async def set_order_status_audited(
    conn: asyncpg.Connection,
    order_id: UUID,
    *,
    expected: str,
    status: str,
    extra: dict[str, Any] | None = None,
    audit: list[AuditEntry],
    event: OutboxEvent,
) -> bool:
    """``set_order_status()``, its audit rows (as for ``audit_many()``) and the event announcing
    it, in ONE statement (``writes.guarded``). Nothing is written unless the order was still in
    ``expected``; False then."""
    assignments, values = set_clause(extra or {}, first=4)
    changed = await writes.guarded(
        conn,
        f"""
        UPDATE orders SET {assignments}status = $3, updated_at = now()
        WHERE id = $1 AND status = $2 RETURNING id
        """,
        order_id,
        expected,
        status,
        *values,
        audit=AUDIT,
        entries=audit,
        events=[event],
    )
    return bool(changed)


async def due_expired_orders(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Lock PENDING orders past their expiry; other workers skip them (``SKIP LOCKED``)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT * FROM orders WHERE status = 'PENDING' AND expires_at <= now()
        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return found


# ------------------------------------------------------------------------------------- invariant


async def inventory_report(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Per ticket type: the stored inventory and what the seats and registrations say it must be."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT tt.id, tt.current_quantity, tt.max_quantity,
               (SELECT count(*) FROM seats s JOIN orders o ON o.id = s.order_id
                 WHERE s.ticket_type_id = tt.id AND s.status = 'ACTIVE'
                   AND o.status IN ('PENDING', 'PAID', 'REFUND_PENDING', 'PARTIALLY_REFUNDED'))
             + (SELECT count(*) FROM registrations r
                 WHERE r.ticket_type_id = tt.id AND r.order_id IS NULL
                   AND r.status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED')) AS expected
        FROM ticket_types tt ORDER BY tt.id
        """
    )
    return found


# ------------------------------------------------------------------------------ refunds in flight
async def refund_applied(conn: asyncpg.Connection, refund_id: UUID) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM applied_refunds WHERE refund_id = $1", refund_id)
    )


async def refund_in_flight(
    conn: asyncpg.Connection,
    refund_id: UUID,
    *,
    order_id: UUID,
    tenant_id: str,
    status: str,
    amount: int,
) -> None:
    await conn.execute(
        """
        INSERT INTO refunds_in_flight (refund_id, order_id, tenant_id, status, amount)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (refund_id) DO UPDATE SET status = excluded.status
        """,
        refund_id,
        order_id,
        tenant_id,
        status,
        amount,
    )


async def land_applied_refund(
    conn: asyncpg.Connection, refund_id: UUID, *, order_id: UUID, tenant_id: str, amount: int
) -> int | None:
    """Record a settled refund as applied and no longer in flight, in one statement; returns
    how many of the order's other refunds are still in flight, or None when this refund was
    applied before (under any event id)."""
    row = await conn.fetchrow(
        """
        WITH ins AS (
            INSERT INTO applied_refunds (refund_id, order_id, tenant_id, amount)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (refund_id) DO NOTHING RETURNING refund_id
        ), landed AS (
            DELETE FROM refunds_in_flight WHERE refund_id IN (SELECT refund_id FROM ins)
        )
        SELECT EXISTS (SELECT 1 FROM ins) AS fresh,
               (SELECT count(*) FROM refunds_in_flight
                 WHERE order_id = $2 AND refund_id <> $1) AS others_in_flight
        """,
        refund_id,
        order_id,
        tenant_id,
        amount,
    )
    assert row is not None
    return int(row["others_in_flight"]) if row["fresh"] else None


async def refund_landed(conn: asyncpg.Connection, refund_id: UUID) -> None:
    """The refund settled, failed or was canceled: no longer in flight."""
    await conn.execute("DELETE FROM refunds_in_flight WHERE refund_id = $1", refund_id)


async def refunds_in_flight(conn: asyncpg.Connection, order_id: UUID) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM refunds_in_flight WHERE order_id = $1", order_id)
    )
