"""All SQL of the refunds service. Every statement runs in a transaction scoped to a tenant
(``app.tenant_id``); row-level security hides every other tenant's rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import writes
from ticketing_shared.db import set_clause
from ticketing_shared.writes import OutboxEvent, Table

from .domain import ACTIVE, AuditEntry

# a refund's audit trail: the columns an AuditEntry fills, by name
AUDIT = Table(
    "refund_audit",
    {
        "refund_id": "uuid",
        "order_id": "uuid",
        "tenant_id": "text",
        "actor": "text",
        "action": "text",
        "from_status": "text",
        "to_status": "text",
        "details": "jsonb",
    },
)

_ACTIVE = [s.value for s in ACTIVE]


# ------------------------------------------------------------------------------------ read model
async def insert_orders(conn: asyncpg.Connection, orders: list[dict[str, Any]]) -> None:
    """Add orders (``order.created`` payloads as JSON) to the read model in one statement, taking
    the columns it keeps; one already there is left as it is."""
    await conn.execute(
        """
        INSERT INTO orders_view (order_id, tenant_id, event_id, buyer_id, buyer_email, buyer_locale,
                                 event_title, quantity, total_amount, currency, seat_ids)
        SELECT o.order_id, o.tenant_id, o.event_id, o.buyer_id, o.buyer_email, o.buyer_locale,
               o.event_title, o.quantity, o.total_amount, o.currency, o.seat_ids
        FROM jsonb_to_recordset($1::jsonb) AS o(order_id uuid, tenant_id text, event_id uuid,
             buyer_id text, buyer_email text, buyer_locale text, event_title text, quantity integer,
             total_amount bigint, currency text, seat_ids uuid[])
        ON CONFLICT (order_id) DO NOTHING
        """,
        orders,
    )


async def mark_order_paid(
    conn: asyncpg.Connection, order_id: UUID, *, amount: int, transaction_id: str, paid_at: datetime
) -> bool:
    return (
        await conn.fetchval(
            """
            UPDATE orders_view SET status = 'PAID', paid_amount = $2, transaction_id = $3, paid_at = $4,
                                   updated_at = now()
            WHERE order_id = $1 AND status <> 'PAID' RETURNING true
            """,
            order_id,
            amount,
            transaction_id,
            paid_at,
        )
        is not None
    )


async def mark_order_cancelled(conn: asyncpg.Connection, order_id: UUID) -> None:
    await conn.execute(
        "UPDATE orders_view SET status = 'CANCELLED', updated_at = now() WHERE order_id = $1 AND status = 'PENDING'",
        order_id,
    )


async def get_order(
    conn: asyncpg.Connection, order_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM orders_view WHERE order_id = $1{lock}", order_id)


async def order_money(conn: asyncpg.Connection, order_id: UUID) -> tuple[int, list[UUID]]:
    """(sum of the active refunds of the order's payment, seats in active refunds)."""
    row = await conn.fetchrow(
        """
        SELECT coalesce((SELECT sum(amount) FROM refunds
                         WHERE order_id = $1 AND kind = 'order' AND status = ANY($2::text[])), 0) AS total,
               coalesce((SELECT array_agg(i.seat_id) FROM refund_items i JOIN refunds r ON r.id = i.refund_id
                         WHERE r.order_id = $1 AND r.kind = 'order' AND r.status = ANY($2::text[])),
                        '{}'::uuid[]) AS seats
        """,
        order_id,
        _ACTIVE,
    )
    assert row is not None
    return int(row["total"]), list(row["seats"])


# --------------------------------------------------------------------------------------- refunds
async def insert_refund(
    conn: asyncpg.Connection, refund: dict[str, Any], items: list[tuple[UUID, int]]
) -> asyncpg.Record | None:
    """The refund and its seats; None when a rejected payment already has its refund."""
    row = await conn.fetchrow(
        """
        INSERT INTO refunds (id, order_id, tenant_id, kind, payment_id, amount, currency, reason, note,
                             internal_note, requested_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (payment_id) WHERE kind = 'rejected_payment' DO NOTHING
        RETURNING *
        """,
        refund["id"],
        refund["order_id"],
        refund["tenant_id"],
        refund.get("kind", "order"),
        refund.get("payment_id"),
        refund["amount"],
        refund["currency"],
        refund["reason"],
        refund.get("note"),
        refund.get("internal_note"),
        refund["requested_by"],
    )
    if row is not None and items:
        await conn.execute(
            """
            INSERT INTO refund_items (refund_id, seat_id, tenant_id, amount)
            SELECT $1, s, $2, a FROM unnest($3::uuid[], $4::bigint[]) AS t (s, a)
            """,
            refund["id"],
            refund["tenant_id"],
            [s for s, _ in items],
            [a for _, a in items],
        )
    return row


async def get_refund(
    conn: asyncpg.Connection, refund_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM refunds WHERE id = $1{lock}", refund_id)


async def list_refunds(conn: asyncpg.Connection, order_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM refunds WHERE order_id = $1 ORDER BY created_at, id", order_id
    )
    return found


async def event_tenant(conn: asyncpg.Connection, event_id: UUID) -> str | None:
    found: str | None = await conn.fetchval(
        "SELECT tenant_id FROM orders_view WHERE event_id = $1 LIMIT 1", event_id
    )
    return found


async def list_event_refunds(
    conn: asyncpg.Connection,
    event_id: UUID,
    *,
    status: str | None,
    only_needing_action: bool,
    limit: int,
    after: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """A page (``limit + 1`` rows) of the refunds of the event's orders, in (created_at, id) order."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT r.*, o.buyer_email
        FROM refunds r JOIN orders_view o ON o.order_id = r.order_id
        WHERE o.event_id = $1 AND ($2::text IS NULL OR r.status = $2)
          AND (NOT $3 OR (r.status = 'failed' AND r.kind = 'rejected_payment'))
          AND ($4::timestamptz IS NULL OR (r.created_at, r.id) > ($4, $5::uuid))
        ORDER BY r.created_at, r.id LIMIT $6
        """,
        event_id,
        status,
        only_needing_action,
        after[0] if after else None,
        after[1] if after else None,
        limit + 1,
    )
    return found


async def items_of(
    conn: asyncpg.Connection, refund_ids: list[UUID]
) -> dict[UUID, list[asyncpg.Record]]:
    rows = await conn.fetch(
        "SELECT * FROM refund_items WHERE refund_id = ANY($1::uuid[]) ORDER BY seat_id", refund_ids
    )
    out: dict[UUID, list[asyncpg.Record]] = {r: [] for r in refund_ids}
    for row in rows:
        out[row["refund_id"]].append(row)
    return out


async def update_refund(
    conn: asyncpg.Connection, refund_id: UUID, fields: dict[str, Any]
) -> asyncpg.Record:
    assignments, values = set_clause(fields, first=2)
    row = await conn.fetchrow(
        f"UPDATE refunds SET {assignments}updated_at = now() WHERE id = $1 RETURNING *",
        refund_id,
        *values,
    )
    assert row is not None
    return row


async def lock_for_provider_update(
    conn: asyncpg.Connection, refund_id: UUID
) -> asyncpg.Record | None:
    """Lock a refund the provider has news of, with what announcing that news needs: its seats,
    the order's buyer and paid amount, and what the order's other settled refunds returned."""
    return await conn.fetchrow(
        """
        SELECT r.*, o.buyer_email, o.buyer_locale, o.event_title, o.paid_amount,
               ARRAY(SELECT seat_id FROM refund_items WHERE refund_id = r.id ORDER BY seat_id)
                   AS seat_ids,
               (SELECT coalesce(sum(amount), 0) FROM refunds x
                 WHERE x.order_id = r.order_id AND x.kind = 'order' AND x.status = 'refunded'
                   AND x.id <> r.id) AS refunded_by_others
        FROM refunds r JOIN orders_view o ON o.order_id = r.order_id
        WHERE r.id = $1
        FOR UPDATE OF r
        """,
        refund_id,
    )


async def record_provider_update(
    conn: asyncpg.Connection,
    refund_id: UUID,
    fields: dict[str, Any],
    *,
    entry: AuditEntry,
    event: OutboxEvent,
) -> None:
    """Update a refund with the provider's news, audit it and announce it, in ONE statement
    (``writes.guarded``): one round trip, not three."""
    assignments, values = set_clause(fields, first=2)
    updated = await writes.guarded(
        conn,
        f"UPDATE refunds SET {assignments}updated_at = now() WHERE id = $1 RETURNING id",
        refund_id,
        *values,
        audit=AUDIT,
        entries=[entry],
        events=[event],
    )
    assert len(updated) == 1, f"refund {refund_id} vanished under its lock"


async def audit(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    await conn.execute(AUDIT.insert("$1::jsonb"), [entry])


async def audit_trail(conn: asyncpg.Connection, refund_id: UUID) -> list[asyncpg.Record]:
    found: list[asyncpg.Record] = await conn.fetch(
        "SELECT actor, action, from_status, to_status, details, at FROM refund_audit WHERE refund_id = $1 ORDER BY id",
        refund_id,
    )
    return found


async def scope_to_order(conn: asyncpg.Connection, order_id: UUID) -> None:
    """Narrow the transaction's tenant scope to the tenant of one order (row-level security)."""
    await conn.fetchval("SELECT scope_to_order($1)", order_id)


async def order_is_paid(conn: asyncpg.Connection, order_id: UUID) -> bool:
    """Whether refunds has heard the order paid."""
    return bool(
        await conn.fetchval("SELECT status = 'PAID' FROM orders_view WHERE order_id = $1", order_id)
    )
