"""The read model of orders payments keeps: what each order costs, whose it is, until when."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg


async def insert_orders(conn: asyncpg.Connection, orders: list[dict[str, Any]]) -> None:
    """Add orders (``order.created`` payloads as JSON) to the read model in one statement, taking
    the columns it keeps; one already there is left as it is."""
    await conn.execute(
        """
        INSERT INTO orders_view (order_id, tenant_id, buyer_id, buyer_email, buyer_locale, total_amount,
                                 currency, expires_at, event_title, status)
        SELECT o.order_id, o.tenant_id, o.buyer_id, o.buyer_email, o.buyer_locale, o.total_amount,
               o.currency, o.expires_at, o.event_title, 'PENDING'
        FROM jsonb_to_recordset($1::jsonb) AS o(order_id uuid, tenant_id text, buyer_id text,
             buyer_email text, buyer_locale text, total_amount bigint, currency text,
             expires_at timestamptz, event_title text)
        ON CONFLICT (order_id) DO NOTHING
        """,
        orders,
    )


async def set_order_status(conn: asyncpg.Connection, order_id: UUID, status: str) -> None:
    await conn.execute(
        "UPDATE orders_view SET status = $2, updated_at = now() WHERE order_id = $1",
        order_id,
        status,
    )


async def scope_to_order(conn: asyncpg.Connection, order_id: UUID) -> str | None:
    """Scope the transaction to the tenant of an order of the read model (migration 0006): a
    request on one order sees that tenant's rows only. None when there is no such order."""
    tenant: str | None = await conn.fetchval("SELECT scope_to_order($1)", order_id)
    return tenant


async def get_order(
    conn: asyncpg.Connection, order_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT * FROM orders_view WHERE order_id = $1{lock}", order_id)


async def order_paid(conn: asyncpg.Connection, order_id: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM payments WHERE order_id = $1 AND status = 'SUCCEEDED' LIMIT 1",
            order_id,
        )
    )
