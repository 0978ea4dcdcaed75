"""An organizer's registration list at 100,000 registrations per event, through the gateway:
latency percentiles of a page (first, deep by cursor, filtered, searched) with its total, and
the time of a whole CSV export.

The registrations are written straight into the orders database (one statement), as 100,000
purchases would leave them: an order each (70 % paid, 15 % pending, 10 % refunded, 5 %
cancelled), a registration each with a name and an e-mail address.

    make up && uv run python bench/registration_lists.py --registrations 100000
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import asyncpg
from _common import gateway, latency_line, pg_dsn, token
from flash_sale import TENANT, setup

from ticketing_shared import paging

SEED = """
WITH o AS (
    INSERT INTO orders (id, tenant_id, event_id, ticket_type_id, buyer_id, buyer_email, status,
                        quantity, total_amount, currency, expires_at, created_at, updated_at)
    SELECT gen_random_uuid(), $1, $2, $3, 'lister-' || g, 'lister-' || g || '@example.test',
           CASE WHEN g % 20 < 14 THEN 'PAID' WHEN g % 20 < 17 THEN 'PENDING'
                WHEN g % 20 < 19 THEN 'REFUNDED' ELSE 'CANCELLED' END,
           1, 4900, 'EUR', now() + interval '30 minutes',
           now() - interval '1 second' * ($4 - g), now()
    FROM generate_series(1, $4) AS g
    RETURNING id, buyer_id, status, created_at
)
INSERT INTO registrations (id, tenant_id, event_id, ticket_type_id, order_id, user_id, email, name,
                           status, cancellation_policy, policy_source, created_at, updated_at,
                           cancelled_at, cancellation_reason)
SELECT gen_random_uuid(), $1, $2, $3, o.id, o.buyer_id, o.buyer_id || '@example.test',
       'Guest ' || substr(md5(o.buyer_id), 1, 8) || ' ' || o.buyer_id,
       CASE o.status WHEN 'PAID' THEN 'APPROVED' WHEN 'PENDING' THEN 'PENDING_PAYMENT'
                     ELSE 'CANCELLED' END,
       '{}'::jsonb, 'tenant', o.created_at, now(),
       CASE WHEN o.status IN ('REFUNDED', 'CANCELLED') THEN now() END,
       CASE o.status WHEN 'REFUNDED' THEN 'organizer' WHEN 'CANCELLED' THEN 'payment_abandoned' END
FROM o
"""


async def seed(event_id: str, tt_id: str, count: int) -> None:
    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        started = time.perf_counter()
        await conn.execute(SEED, TENANT, event_id, tt_id, count)
        # what autovacuum does to a table soon after such a load: statistics and the visibility
        # map (an index-only count needs it)
        await conn.execute("VACUUM ANALYZE orders")
        await conn.execute("VACUUM ANALYZE registrations")
        print(f"seeded {count} registrations in {time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


async def deep_cursor(event_id: str, count: int) -> str:
    """The cursor of the approved registration 90 % down the list (as a page there hands out)."""
    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        row = await conn.fetchrow(
            "SELECT created_at, id FROM registrations WHERE event_id = $1 AND status = 'APPROVED'"
            " ORDER BY created_at, id OFFSET $2 LIMIT 1",
            event_id,
            int(count * 0.7 * 0.9),
        )
    finally:
        await conn.close()
    return paging.encode(row["created_at"], row["id"])


async def timed(times: int, call: Callable[[], Awaitable[None]]) -> list[float]:
    out = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        out.append(time.perf_counter() - started)
    return out


async def run(count: int, samples: int, exports: int) -> None:
    headers = {"Authorization": f"Bearer {token('bench-admin', roles={TENANT: 'owner'})}"}
    async with aiohttp.ClientSession(
        headers=headers, timeout=aiohttp.ClientTimeout(total=300)
    ) as session:
        event_id, tt_id = await setup(session, count)
        await seed(event_id, tt_id, count)
        path = f"{gateway()}/v1/events/{event_id}/registrations"
        totals: dict[str, int] = {}

        def page(name: str, **params: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                async with session.get(path, params=params) as resp:
                    assert resp.status == 200, await resp.text()
                    totals[name] = (await resp.json())["total"]

            return call

        deep = await deep_cursor(event_id, count)
        cases = {
            "first page (50)": page("first page (50)"),
            "deep page by cursor, status": page(
                "deep page by cursor, status", status="APPROVED", cursor=deep
            ),
            "order_status=PENDING": page("order_status=PENDING", order_status="PENDING"),
            "status + order_status + ticket type": page(
                "status + order_status + ticket type",
                status="CANCELLED",
                order_status="REFUNDED",
                ticket_type_id=tt_id,
            ),
            "search q (name fragment)": page("search q (name fragment)", q="guest 4"),
            "search q (e-mail, one match)": page("search q (e-mail, one match)", q="lister-4242@"),
            "200 per page": page("200 per page", limit="200"),
        }
        print(f"registration list, one event of {count} registrations, {samples} calls each:")
        for name, call in cases.items():
            await call()  # warm
            print(f"  {name:38s} {latency_line(await timed(samples, call))}  total={totals[name]}")

        rows = 0

        def export(**params: str) -> Callable[[], Awaitable[None]]:
            async def call() -> None:
                nonlocal rows
                async with session.get(f"{path}.csv", params=params) as resp:
                    assert resp.status == 200, await resp.text()
                    rows = (await resp.read()).count(b"\n") - 1

            return call

        for label, params in (("all rows", {}), ("order_status=PAID", {"order_status": "PAID"})):
            spans = await timed(exports, export(**params))
            print(f"  CSV export, {label:22s} {latency_line(spans)}  rows={rows}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--registrations", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--exports", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.registrations, args.samples, args.exports))


if __name__ == "__main__":
    main()
