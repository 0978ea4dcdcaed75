"""Idempotent consumers: claim ``(consumer, event_id)`` in the transaction of the effects."""

from __future__ import annotations

import asyncpg

from .db import scoped_by_claim
from .envelope import CloudEvent

# With a tenant: the same statement scopes the transaction to it (``app.tenant_id``), so the
# handler's own ``set_tenant()`` for that tenant costs no round trip (see ``scoped_by_claim``).
_SCOPE = ", set_config('app.tenant_id', $8, true)"


async def claim(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    event: CloudEvent,
    topic: str,
    partition: int,
    offset: int,
    tenant: str | None = None,
) -> bool:
    """True the first time ``consumer`` sees ``event``; False for a redelivery (do nothing).
    With ``tenant``, the transaction is also scoped to it, in the same round trip."""
    claims = [(event, topic, partition, offset)]
    return str(event.id) in await claim_many(conn, consumer=consumer, claims=claims, tenant=tenant)


async def claim_many(
    conn: asyncpg.Connection,
    *,
    consumer: str,
    claims: list[tuple[CloudEvent, str, int, int]],
    tenant: str | None = None,
) -> set[str]:
    """:func:`claim` for a batch in ONE statement: the ids of the events seen for the first time
    (an id twice in the batch is claimed once). ``claims`` holds (event, topic, partition,
    offset), in order. ``tenant`` as for :func:`claim`."""
    args: list[object] = [
        consumer,
        [e.id for e, _, _, _ in claims],
        [e.type for e, _, _, _ in claims],
        [e.subject for e, _, _, _ in claims],
        [t for _, t, _, _ in claims],
        [p for _, _, p, _ in claims],
        [o for _, _, _, o in claims],
    ]
    if tenant is not None:
        args.append(scoped_by_claim(conn, tenant))
    fresh = await conn.fetchval(
        f"""
        WITH c AS (
            INSERT INTO inbox (consumer, event_id, ce_type, ce_subject, topic, partition, "offset")
            SELECT $1, c.event_id, c.ce_type, c.ce_subject, c.topic, c.partition, c."offset"
            FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[], $7::bigint[])
                 WITH ORDINALITY AS c(event_id, ce_type, ce_subject, topic, partition, "offset", n)
            ORDER BY c.n
            ON CONFLICT (consumer, event_id) DO NOTHING
            RETURNING event_id
        )
        SELECT ARRAY(SELECT event_id FROM c){_SCOPE if tenant is not None else ""}
        """,
        *args,
    )
    return {str(i) for i in fresh}
