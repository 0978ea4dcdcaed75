"""Idempotent consumers: claim ``(consumer, event_id)`` in the transaction of the effects.

The claim also scopes that transaction for row-level security, in the same statement: to the
tenants of the events claimed (every event names its tenant). The inbox rows themselves are
bound by it; each handler then runs under its own events' tenants only (the consumer wrapper
narrows the scope, at no round trip when the batch is one tenant's: ``db.scoped_by_claim``).
"""

from __future__ import annotations

import asyncpg

from .db import scoped_by_claim
from .envelope import CloudEvent

# (event, topic, partition, offset, tenant) of one record
Claim = tuple[CloudEvent, str, int, int, str | None]


async def claim(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    event: CloudEvent,
    topic: str,
    partition: int,
    offset: int,
    tenant: str | None,
) -> bool:
    """True the first time ``consumer`` sees ``event``; False for a redelivery (do nothing)."""
    claims = [(event, topic, partition, offset, tenant)]
    return str(event.id) in await claim_many(conn, consumer=consumer, claims=claims)


async def claim_many(conn: asyncpg.Connection, *, consumer: str, claims: list[Claim]) -> set[str]:
    """:func:`claim` for a batch in ONE statement: the ids of the events seen for the first time
    (an id twice in the batch is claimed once), the transaction scoped to the batch's tenants."""
    tenants = {t for *_, t in claims if t}
    fresh = await conn.fetchval(
        """
        WITH c AS (
            INSERT INTO inbox (consumer, event_id, ce_type, ce_subject, topic, partition, "offset",
                               tenant_id)
            SELECT $1, c.event_id, c.ce_type, c.ce_subject, c.topic, c.partition, c."offset",
                   c.tenant_id
            FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[],
                        $8::text[])
                 WITH ORDINALITY AS c(event_id, ce_type, ce_subject, topic, partition, "offset",
                                      tenant_id, n)
            -- evaluated for each row before it is inserted: the row-level security check of the
            -- insert, and all that follows in the transaction, sees the batch's scope
            WHERE set_config('app.tenant_id', $9, true) IS NOT NULL
            ORDER BY c.n
            ON CONFLICT (consumer, event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT ARRAY(SELECT event_id FROM c)
        """,
        consumer,
        [e.id for e, *_ in claims],
        [e.type for e, *_ in claims],
        [e.subject for e, *_ in claims],
        [t for _, t, _, _, _ in claims],
        [p for _, _, p, _, _ in claims],
        [o for _, _, _, o, _ in claims],
        [t for *_, t in claims],
        scoped_by_claim(conn, tenants),
    )
    return {str(i) for i in fresh}
