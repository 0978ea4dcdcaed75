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


async def claim_many(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    claims: list[tuple[CloudEvent, str, int, int]],
) -> set[str]:
    """:func:`claim` for a batch in ONE statement: the ids of the events seen for the first time
    (an id twice in the batch is claimed once). ``claims`` holds (event, topic, partition,
    offset), in order."""
    rows = await conn.fetch(
        """
        INSERT INTO inbox (consumer, event_id, ce_type, ce_subject, topic, partition, "offset")
        SELECT $1, c.event_id, c.ce_type, c.ce_subject, c.topic, c.partition, c."offset"
        FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[])
             WITH ORDINALITY AS c(event_id, ce_type, ce_subject, topic, partition, "offset", n)
        ORDER BY c.n
        ON CONFLICT (consumer, event_id) DO NOTHING
        RETURNING event_id
        """,
        consumer,
        [e.id for e, _, _, _ in claims],
        [e.type for e, _, _, _ in claims],
        [e.subject for e, _, _, _ in claims],
        [t for _, t, _, _ in claims],
        [p for _, _, p, _ in claims],
        [o for _, _, _, o in claims],
    )
    return {str(r["event_id"]) for r in rows}
