"""All SQL of the notifications service."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


async def insert_delivery(
    conn: asyncpg.Connection,
    *,
    delivery_id: UUID,
    event_id: UUID,
    tenant_id: str,
    template: str,
    recipient: str,
    locale: str,
    order_id: UUID | None,
    subject: str,
    body_text: str,
    body_html: str | None,
) -> bool:
    """Insert a pending delivery; False when (event, template, recipient) already has one."""
    inserted = await conn.fetchval(
        """
        INSERT INTO deliveries (id, event_id, template, recipient, locale, order_id, subject,
                                body_text, body_html, tenant_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (event_id, template, recipient) DO NOTHING
        RETURNING true
        """,
        delivery_id,
        event_id,
        template,
        recipient,
        locale,
        order_id,
        subject,
        body_text,
        body_html,
        tenant_id,
    )
    return bool(inserted)


async def claim_due(conn: asyncpg.Connection, *, limit: int) -> list[asyncpg.Record]:
    """Lock due pending deliveries; other senders skip them (``SKIP LOCKED``)."""
    found: list[asyncpg.Record] = await conn.fetch(
        """
        SELECT id, recipient, subject, body_text, body_html, attempts
        FROM deliveries
        WHERE status = 'pending' AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT $1
        FOR UPDATE SKIP LOCKED
        """,
        limit,
    )
    return found


async def mark_sent(conn: asyncpg.Connection, delivery_ids: list[UUID]) -> None:
    """The server accepted these deliveries (one statement for a whole session's worth)."""
    if delivery_ids:
        await conn.execute(
            """
            UPDATE deliveries SET status = 'sent', sent_at = clock_timestamp(), attempts = attempts + 1
            WHERE id = ANY($1::uuid[])
            """,
            delivery_ids,
        )


async def mark_attempt_failed(
    conn: asyncpg.Connection, delivery_id: UUID, *, error: str, retry_at: datetime | None
) -> None:
    """Record a failed attempt; ``retry_at`` None means give up (status ``failed``)."""
    await conn.execute(
        """
        UPDATE deliveries
        SET attempts = attempts + 1, last_error = $2,
            status = CASE WHEN $3::timestamptz IS NULL THEN 'failed' ELSE 'pending' END,
            next_attempt_at = COALESCE($3::timestamptz, next_attempt_at)
        WHERE id = $1
        """,
        delivery_id,
        error[:2000],
        retry_at,
    )
