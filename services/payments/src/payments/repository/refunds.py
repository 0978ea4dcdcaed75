"""Refunds as payments carries them out at the provider."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import writes
from ticketing_shared.db import set_clause
from ticketing_shared.writes import OutboxEvent

from .payments import noted, redacted


async def refundable_payment(
    conn: asyncpg.Connection, order_id: UUID, payment_id: UUID | None
) -> asyncpg.Record | None:
    """The payment a refund returns money from: the one named, else the order's paid one."""
    if payment_id is not None:
        return await conn.fetchrow(
            "SELECT * FROM payments WHERE id = $1 AND status IN ('SUCCEEDED', 'REJECTED')",
            payment_id,
        )
    return await conn.fetchrow(
        """
        SELECT * FROM payments WHERE order_id = $1 AND status = 'SUCCEEDED'
        ORDER BY paid_at LIMIT 1
        """,
        order_id,
    )


async def insert_refund(conn: asyncpg.Connection, refund: dict[str, Any]) -> bool:
    """False when this refund is known already (a redelivered request)."""
    return bool(
        await conn.fetchval(
            """
            INSERT INTO provider_refunds (refund_id, order_id, tenant_id, payment_id, provider,
                                          out_refund_no, amount, currency, note)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT DO NOTHING RETURNING true
            """,
            refund["refund_id"],
            refund["order_id"],
            refund["tenant_id"],
            refund["payment_id"],
            refund["provider"],
            refund["out_refund_no"],
            refund["amount"],
            refund["currency"],
            refund["note"],
        )
    )


async def get_refund(
    conn: asyncpg.Connection,
    *,
    refund_id: UUID | None = None,
    provider: str | None = None,
    out_refund_no: str | None = None,
    for_update: bool = False,
) -> asyncpg.Record | None:
    """A refund by our id, or by the provider's reference; with its payment's numbers."""
    lock = " FOR UPDATE OF r" if for_update else ""
    return await conn.fetchrow(
        f"""
        SELECT r.*, p.out_trade_no, p.amount AS payment_amount, p.transaction_id,
               p.provider_payment_id
        FROM provider_refunds r JOIN payments p ON p.id = r.payment_id
        WHERE ($1::uuid IS NULL OR r.refund_id = $1)
          AND ($2::text IS NULL OR (r.provider = $2 AND r.out_refund_no = $3)){lock}
        """,
        refund_id,
        provider,
        out_refund_no,
    )


# a provider's message recorded with the change it brought (the ``n`` part of move_refund's
# statement); its outcome is 'duplicate' when the refund had moved on already
async def move_refund(
    conn: asyncpg.Connection,
    refund_id: UUID,
    fields: dict[str, Any],
    *,
    expected: list[str],
    event: OutboxEvent,
    notification: dict[str, Any] | None = None,
    outcome: str = "",
) -> bool:
    """Move a refund on, only from one of the ``expected`` states, and write its
    ``payment.refund_updated`` outbox row, in ONE statement (``writes.guarded``); with the
    provider's ``notification`` that said it, that is recorded in the same statement (and
    recorded even when there was nothing to apply). False when the refund was not in an
    ``expected`` state."""
    assignments, values = set_clause(fields, first=3)
    args: list[Any] = [refund_id, expected, *values]
    also = ""
    if notification is not None:
        args += [redacted(notification), outcome]
        n = len(args)
        also = noted(
            f"${n - 1}::jsonb",
            f"CASE WHEN EXISTS (SELECT 1 FROM changed) THEN ${n}::text ELSE 'duplicate' END",
        )
    changed = await writes.guarded(
        conn,
        f"""
        UPDATE provider_refunds SET {assignments}updated_at = now()
        WHERE refund_id = $1 AND status = ANY($2::text[]) RETURNING refund_id
        """,
        *args,
        events=[event],
        also=also,
    )
    return bool(changed)


async def open_refunds(
    conn: asyncpg.Connection, payment_id: UUID, *, lock: bool = True
) -> list[asyncpg.Record]:
    """A payment's refunds the provider may still move on (locked unless ``lock`` is False),
    with the payment's numbers."""
    found: list[asyncpg.Record] = await conn.fetch(
        f"""
        SELECT r.*, p.out_trade_no, p.amount AS payment_amount, p.transaction_id,
               p.provider_payment_id
        FROM provider_refunds r JOIN payments p ON p.id = r.payment_id
        WHERE r.payment_id = $1 AND r.status IN ('pending', 'queued', 'processing')
        ORDER BY r.created_at{" FOR UPDATE OF r" if lock else ""}
        """,
        payment_id,
    )
    return found
