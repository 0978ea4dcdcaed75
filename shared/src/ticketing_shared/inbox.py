"""Idempotent consumers: claim ``(consumer, event_id)`` in the transaction of the effects."""

from __future__ import annotations

import asyncpg

from .envelope import CloudEvent


async def claim(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    event: CloudEvent,
    topic: str,
    partition: int,
    offset: int,
) -> bool:
    """True the first time ``consumer`` sees ``event``; False for a redelivery (do nothing)."""
    claimed = await conn.fetchval(
        """
        INSERT INTO inbox (consumer, event_id, ce_type, ce_subject, topic, partition, "offset")
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (consumer, event_id) DO NOTHING
        RETURNING true
        """,
        consumer,
        event.id,
        event.type,
        event.subject,
        topic,
        partition,
        offset,
    )
    return bool(claimed)
