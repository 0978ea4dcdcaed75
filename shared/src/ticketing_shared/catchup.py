"""Read your writes across services: wait, bounded, for a read model to catch up.

A client acts on its own write at once (it pays right after the purchase answered, an organizer
refunds the order it just saw paid) while the event announcing that write is still on its way to
the service it calls (tens of milliseconds). Such a request does not answer 404 or 409 at once:
the service looks again every few milliseconds (5 → 50 ms) until its read model shows the write
or the bound has passed. Only a request that did not find what it needed waits; the consumers'
path pays nothing (no NOTIFY in their transactions, no listening connection).

Order ids are UUIDv7 and carry their creation time, so "an order that never existed" is told
apart cheaply: only an order created less than ``within`` ago is waited for, until ``within``
after its creation; any other id (older, not a v7, a guess) is answered at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from uuid import UUID

import asyncpg

Probe = Callable[[asyncpg.Connection], Awaitable[bool]]


def fresh_window(order_id: UUID, within: float) -> float:
    """Seconds still worth waiting for ``order_id`` to be learned: up to ``within`` after its
    creation (0 for an id that is not a UUIDv7 or was created longer ago)."""
    if order_id.version != 7:
        return 0.0
    created = int(order_id.hex[:12], 16) / 1000  # Unix time, in seconds
    return max(0.0, min(within, created + within - time.time()))


async def wait_until(pool: asyncpg.Pool, probe: Probe, *, timeout: float) -> bool:
    """Run ``probe`` on a pooled connection until it answers True (then True) or ``timeout``
    seconds have passed (then False). The connection goes back to the pool between looks."""
    if timeout <= 0:
        return False
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        async with pool.acquire() as conn:
            if await probe(conn):
                return True
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)


async def order_learned(pool: asyncpg.Pool, order_id: UUID, *, within: float) -> bool:
    """Wait until the service's read model holds ``order_id`` (found by the database's
    ``scope_to_order``), for a fresh order only (see ``fresh_window``)."""

    async def known(conn: asyncpg.Connection) -> bool:
        return await conn.fetchval("SELECT scope_to_order($1)", order_id) is not None

    return await wait_until(pool, known, timeout=fresh_window(order_id, within))
