"""Registrations, one at a time. ``$n`` parameters only; every statement runs in a transaction
scoped to a tenant (row-level security)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared.db import set_clause

# --------------------------------------------------------------------------------- registrations


async def get_registration(
    conn: asyncpg.Connection, registration_id: UUID, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE OF r" if for_update else ""
    return await conn.fetchrow(
        f"""
        SELECT r.*, e.starts_at AS event_starts_at, e.title AS event_title, e.require_approval,
               o.status AS order_status, o.total_amount, o.refunded_amount, o.transaction_fee, o.app_fee,
               o.quantity AS order_quantity, o.currency AS order_currency, o.buyer_id, s.position AS seat_position
        FROM registrations r
        JOIN events e ON e.id = r.event_id
        LEFT JOIN orders o ON o.id = r.order_id
        LEFT JOIN seats s ON s.id = r.seat_id
        WHERE r.id = $1{lock}
        """,
        registration_id,
    )


async def insert_registration(conn: asyncpg.Connection, reg: dict[str, Any]) -> None:
    cols = list(reg)
    await conn.execute(
        f"INSERT INTO registrations ({', '.join(cols)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(cols)))})",
        *(reg[c] for c in cols),
    )


async def set_registration_status(
    conn: asyncpg.Connection,
    registration_id: UUID,
    *,
    expected: list[str],
    status: str,
    extra: dict[str, Any] | None = None,
) -> asyncpg.Record | None:
    assignments, values = set_clause(extra or {}, first=4)
    return await conn.fetchrow(
        f"""
        UPDATE registrations SET {assignments}status = $3, updated_at = now()
        WHERE id = $1 AND status = ANY($2::text[]) RETURNING *
        """,
        registration_id,
        expected,
        status,
        *values,
    )


async def revive_buyer_registration(
    conn: asyncpg.Connection, order_id: UUID, *, status: str
) -> asyncpg.Record | None:
    """Late payment: the buyer's registration, cancelled with the unpaid order, comes back."""
    return await conn.fetchrow(
        """
        UPDATE registrations r
        SET status = $2, cancelled_at = NULL, cancellation_reason = NULL, cancellation_reason_note = NULL,
            updated_at = now()
        FROM orders o, seats s
        WHERE r.order_id = $1 AND o.id = r.order_id AND s.id = r.seat_id AND s.position = 1
          AND r.user_id = o.buyer_id AND r.status = 'CANCELLED'
        RETURNING r.*
        """,
        order_id,
        status,
    )


async def promote_buyer_registration(
    conn: asyncpg.Connection, order_id: UUID, *, status: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """
        UPDATE registrations SET status = $2, updated_at = now()
        WHERE order_id = $1 AND status = 'PENDING_PAYMENT' RETURNING *
        """,
        order_id,
        status,
    )


async def user_has_registration_on_order(
    conn: asyncpg.Connection, order_id: UUID, user_id: str
) -> bool:
    return bool(
        await conn.fetchval(
            """
            SELECT true FROM registrations WHERE order_id = $1 AND user_id = $2
              AND status IN ('PENDING_PAYMENT', 'PENDING', 'APPROVED') LIMIT 1
            """,
            order_id,
            user_id,
        )
    )


async def buyer_policy(
    conn: asyncpg.Connection, order_id: UUID, buyer_id: str
) -> asyncpg.Record | None:
    """The cancellation policy (and its source) of the buyer's own registration on an order."""
    return await conn.fetchrow(
        "SELECT cancellation_policy, policy_source FROM registrations "
        "WHERE order_id = $1 AND user_id = $2 ORDER BY created_at LIMIT 1",
        order_id,
        buyer_id,
    )


async def mark_cancellation_requested(conn: asyncpg.Connection, registration_id: UUID) -> None:
    """A paid registration's cancellation was asked for: held until its refund settles."""
    await conn.execute(
        "UPDATE registrations SET cancellation_requested_at = now(), updated_at = now() "
        "WHERE id = $1",
        registration_id,
    )
