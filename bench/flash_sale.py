"""Flash sale through the gateway: M seats, N concurrent buyers, each buying 1 seat until sold out.

Prints orders/s, latency percentiles, the oversold count (must be 0) and the peak RSS of every
service process; then runs pgbench with the same SQL transaction the purchase runs, on the same
database, and prints its TPS and our ratio to it.

    make up && uv run python bench/flash_sale.py --seats 1000 --buyers 50
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from _common import (
    WORKERS_AND_BROKER,
    cpu_seconds,
    gateway,
    latency_line,
    paused,
    pg_dsn,
    print_cpu,
    print_rss,
    token,
)

TENANT = "bench-tenant"


async def setup(session: aiohttp.ClientSession, seats: int) -> tuple[str, str]:
    headers = {"Authorization": f"Bearer {token('bench-admin', roles={TENANT: 'owner'})}"}
    async with session.post(
        f"{gateway()}/v1/tenants/{TENANT}/events",
        headers=headers,
        json={
            "title": "Flash sale",
            "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "require_approval": False,
            "currency": "EUR",
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        event = await resp.json()
    async with session.post(
        f"{gateway()}/v1/events/{event['id']}/ticket-types",
        headers=headers,
        json={
            "name": "GA",
            "max_quantity": seats,
            "price_tiers": [{"quantity": 1, "total_amount": 4900}],
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        tt = await resp.json()
    return event["id"], tt["id"]


async def run(seats: int, buyers: int, workers_elsewhere: bool = False) -> tuple[float, int]:
    connector = aiohttp.TCPConnector(limit=buyers * 2)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        event_id, tt_id = await setup(session, seats)
        url = f"{gateway()}/v1/events/{event_id}/registrations"
        body = {"ticket_type_id": tt_id, "quantity": 1}
        # tokens minted up front: the load generator must not compete with the services for CPU
        tokens = [
            f"Bearer {token(f'buyer-{uuid.uuid4().hex[:10]}')}" for _ in range(seats + buyers * 4)
        ]
        next_token = itertools.count()
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        sold_out = asyncio.Event()

        async def buyer() -> None:
            while not sold_out.is_set():
                i = next(next_token)
                if i >= len(tokens):
                    return
                started = time.perf_counter()
                async with session.post(
                    url, json=body, headers={"Authorization": tokens[i]}
                ) as resp:
                    await resp.read()
                    latencies.append(time.perf_counter() - started)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.status == 409:
                        sold_out.set()

        with paused(WORKERS_AND_BROKER, workers_elsewhere):
            cpu_before = {**cpu_seconds(), "bench client": time.process_time()}
            started = time.perf_counter()
            await asyncio.gather(*(buyer() for _ in range(buyers)))
            elapsed = time.perf_counter() - started
            cpu_after = {**cpu_seconds(), "bench client": time.process_time()}

    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        current, maximum = await conn.fetchrow(
            "SELECT current_quantity, max_quantity FROM ticket_types WHERE id = $1",
            uuid.UUID(tt_id),
        )
        orders = await conn.fetchval(
            "SELECT count(*) FROM orders WHERE ticket_type_id = $1", uuid.UUID(tt_id)
        )
    finally:
        await conn.close()
    sold = statuses.get(201, 0)
    oversold = max(0, orders - maximum) + max(0, current - maximum)
    where = " (workers and broker paused)" if workers_elsewhere else ""
    print(f"flash sale: {seats} seats, {buyers} concurrent buyers through the gateway{where}")
    print(
        f"  responses {dict(sorted(statuses.items()))}; orders in the database {orders}, "
        f"current_quantity {current}/{maximum}"
    )
    print(f"  {sold / elapsed:.0f} orders/s over {elapsed:.2f} s")
    print(f"  latency (all responses): {latency_line(latencies)}")
    print(f"  oversold: {oversold}")
    print_cpu(cpu_before, cpu_after, max(sold, 1), "order")
    return sold / elapsed, oversold


# The purchase's statement exactly as the service runs it: purchase_seats(), one self-committing
# statement (order, seat, registration, outbox event, audit row; inventory UPDATE last). Its
# outbox rows go to a topic no service consumes: they must not reach the consumers as orders.
# The ticket type it buys is never changed: its catalog_version stays 1.
PGBENCH_SQL = """\
SELECT purchase_seats(gen_random_uuid(), :tenant, :event::uuid, :tt::uuid, 1, gen_random_uuid()::text, 'b@example.test',
  'en', 4900, 'EUR', now() + interval '30 minutes', now(), ARRAY[gen_random_uuid()], gen_random_uuid(),
  '{"allow_cancellation": false}'::jsonb, 'tenant', '{}'::uuid[], '{}'::uuid[], '{}'::text[],
  gen_random_uuid(), 'bench.events', 'k', 'bench.purchase', 'bench', 'k', now(), 'urn-bench', NULL,
  jsonb_build_object('bench', true, 'tenant_id', :tenant::text),
  'bench', ARRAY['order'], ARRAY['x'], ARRAY['order.created'], ARRAY['PENDING'], ARRAY['{}'::jsonb],
  NULL, NULL, NULL, NULL, NULL, 1);
"""


def pgbench(clients: int, seconds: int) -> float | None:
    """The purchase's SQL transaction alone, in pgbench, on a ticket type that never sells out,
    each by another buyer (as the HTTP sale's)."""
    binary = shutil.which("pgbench") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None
    )
    if binary is None:
        print("pgbench not found: skipping the database-only comparison")
        return None

    async def make_ticket_type() -> tuple[str, str]:
        conn = await asyncpg.connect(pg_dsn("orders"))
        try:
            event_id = await conn.fetchval(
                "SELECT id FROM events WHERE tenant_id = $1 LIMIT 1", TENANT
            )
            tt = await conn.fetchval(
                """INSERT INTO ticket_types (id, event_id, tenant_id, name, max_quantity, price_tiers)
                   VALUES (gen_random_uuid(), $1, $2, 'pgbench', 100000000, '[]'::jsonb) RETURNING id""",
                event_id,
                TENANT,
            )
            return str(event_id), str(tt)
        finally:
            await conn.close()

    event, tt = asyncio.run(make_ticket_type())
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(PGBENCH_SQL)
    out = subprocess.run(
        [
            str(binary),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-D",
            f"tt={tt}",
            "-D",
            f"event={event}",
            "-D",
            f"tenant={TENANT}",
            "-f",
            f.name,
            pg_dsn("orders"),
        ],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        print(f"pgbench failed: {out.stderr.strip()[-800:]}")
        return None
    tps = next(
        float(line.split("=")[1].split()[0])
        for line in out.stdout.splitlines()
        if line.startswith("tps")
    )
    print(
        f"pgbench, the same purchase_seats() statement, {clients} clients, {seconds} s: {tps:.0f} TPS"
    )
    return tps


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seats", type=int, default=1000)
    parser.add_argument("--buyers", type=int, default=50)
    parser.add_argument("--pgbench-seconds", type=int, default=10)
    parser.add_argument(
        "--warmup",
        type=int,
        default=200,
        help="seats of a first, unmeasured sale (fresh processes open connections and "
        "compile plans on their first requests); 0 to measure a cold start",
    )
    parser.add_argument(
        "--workers-elsewhere",
        action="store_true",
        help="pause the workers and the broker during the sale (as if they ran on other machines)",
    )
    args = parser.parse_args()
    if args.warmup:
        print("warm-up sale (not the measurement):")
        asyncio.run(run(args.warmup, args.buyers))
        print()
    rate, _ = asyncio.run(run(args.seats, args.buyers, args.workers_elsewhere))
    print_rss(limit_mb=150)
    tps = pgbench(args.buyers, args.pgbench_seconds)
    if tps:
        print(
            f"ratio: the HTTP path achieves {rate / tps:.0%} of the database-only transaction rate"
        )


if __name__ == "__main__":
    main()
