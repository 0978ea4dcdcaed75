"""Refund settlement: K paid orders refunded, their settlements sent by the WeChat Pay sandbox at a
chosen rate; per refund, the time from the sandbox sending REFUND.SUCCESS to the registration
cancelled + inventory released (orders) and the buyer's e-mail accepted by the SMTP server.

The sandbox must leave refunds PROCESSING until told (the bench settles them itself):

    SANDBOX_AUTO_SETTLE_MS=-1 make up && uv run python bench/settlement.py --orders 500 --rate 100

Set up (not timed): K one-seat orders bought, paid through checkout + sandbox, refunded in full
through the refunds API, until the provider accepted each refund. Timed: the sandbox is asked to
settle one refund every 1/rate s; the time of that call is the start. The orders side is seen by
the commit timestamp of the transaction that cancelled the registration, released the seat and marked
the order REFUNDED (one transaction; the local stack's PostgreSQL tracks commit timestamps); where
the server does not, by when a 10 ms poll of the orders database saw it. The e-mail's time is the
mail server's ``received_at``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from _common import (
    cpu_seconds,
    gateway,
    latency_line,
    pg_dsn,
    port,
    print_cpu,
    print_rss,
    token,
)

TENANT = "bench-refunds"


def sandbox() -> str:
    return f"http://127.0.0.1:{port('WECHAT_SANDBOX_PORT', 8101)}"


def mail() -> str:
    return f"http://127.0.0.1:{port('MAIL_HTTP_PORT', 8103)}"


async def bounded(n: int, items: list[Any], work: Any) -> list[Any]:
    sem = asyncio.Semaphore(n)

    async def one(item: Any) -> Any:
        async with sem:
            return await work(item)

    return await asyncio.gather(*(one(i) for i in items))


async def wait_count(
    conn: asyncpg.Connection, sql: str, arg: Any, want: int, what: str, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while (got := await conn.fetchval(sql, arg)) < want:
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}: {got}/{want}")
        await asyncio.sleep(0.1)


async def setup(session: aiohttp.ClientSession, k: int) -> list[dict[str, str]]:
    admin = {"Authorization": f"Bearer {token('bench-refunds-admin', roles={TENANT: 'owner'})}"}
    async with session.post(
        f"{gateway()}/v1/tenants/{TENANT}/events",
        headers=admin,
        json={
            "title": "Settlement bench",
            "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
            "require_approval": False,
            "currency": "CNY",
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        event = await resp.json()
    async with session.post(
        f"{gateway()}/v1/events/{event['id']}/ticket-types",
        headers=admin,
        json={
            "name": "GA",
            "max_quantity": k,
            "price_tiers": [{"quantity": 1, "total_amount": 1000}],
        },
    ) as resp:
        assert resp.status == 201, await resp.text()
        tt = await resp.json()
    run = uuid.uuid4().hex[:6]

    async def buy_and_pay(i: int) -> dict[str, str]:
        sub = f"sb-{run}-{i}"
        auth = {"Authorization": f"Bearer {token(sub)}"}
        async with session.post(
            f"{gateway()}/v1/events/{event['id']}/registrations",
            headers=auth,
            json={"ticket_type_id": tt["id"], "quantity": 1},
        ) as resp:
            assert resp.status == 201, await resp.text()
            order_id = (await resp.json())["order"]["id"]
        for _ in range(300):  # payments learns the order from orders.events
            async with session.post(
                f"{gateway()}/v1/orders/{order_id}/payments",
                headers=auth,
                json={"provider": "wechatpay"},
            ) as resp:
                if resp.status == 201:
                    out_trade_no = (await resp.json())["out_trade_no"]
                    break
                # not known to payments yet, or polled too fast for the gateway's limits
                assert resp.status in (404, 429), await resp.text()
            await asyncio.sleep(0.05)
        async with session.post(f"{sandbox()}/sandbox/pay/{out_trade_no}") as resp:
            assert resp.status == 200, await resp.text()
        return {"order_id": order_id, "email": f"{sub}@example.test", "event_id": event["id"]}

    orders = await bounded(16, list(range(k)), buy_and_pay)
    ids = [uuid.UUID(o["order_id"]) for o in orders]
    conn = await asyncpg.connect(pg_dsn("refunds"))
    try:
        await wait_count(
            conn,
            "SELECT count(*) FROM orders_view WHERE order_id = ANY($1) AND status = 'PAID'",
            ids,
            k,
            "paid orders known to refunds",
            120,
        )

        async def refund(o: dict[str, str]) -> None:
            # a token per refund: the gateway limits each token to a few requests a second, and
            # this set-up is not what is measured
            staff = token(f"bench-refunds-admin-{o['order_id']}", roles={TENANT: "owner"})
            async with session.post(
                f"{gateway()}/v1/orders/{o['order_id']}/refunds",
                headers={"Authorization": f"Bearer {staff}", "Idempotency-Key": uuid.uuid4().hex},
                json={"reason": "organizer"},
            ) as resp:
                assert resp.status == 201, await resp.text()
                o["refund_id"] = (await resp.json())["id"]

        await bounded(16, orders, refund)
        await wait_count(
            conn,
            "SELECT count(*) FROM refunds WHERE order_id = ANY($1) AND status IN ('processing', 'refunded')",
            ids,
            k,
            "refunds accepted by the provider",
            120,
        )
        settled = await conn.fetchval(
            "SELECT count(*) FROM refunds WHERE order_id = ANY($1) AND status = 'refunded'", ids
        )
        if settled:
            raise SystemExit(
                "refunds settled before the bench settled them: start the stack with "
                "SANDBOX_AUTO_SETTLE_MS=-1 make up"
            )
    finally:
        await conn.close()
    # let the set-up's own work drain (orders learning the refunds are in flight, the "order
    # paid" e-mails) so that it does not load the timed phase
    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        await wait_count(
            conn,
            "SELECT count(*) FROM orders WHERE id = ANY($1) AND status = 'REFUND_PENDING'",
            ids,
            k,
            "orders marked REFUND_PENDING",
            120,
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(pg_dsn("notifications"))
    try:
        await wait_count(
            conn,
            "SELECT count(*) FROM deliveries WHERE order_id = ANY($1) AND status = 'sent'",
            ids,
            k,
            "order e-mails sent",
            120,
        )
    finally:
        await conn.close()
    return orders


async def commit_times(ids: list[uuid.UUID]) -> dict[str, float]:
    """When each order's refund was applied: the commit time of the transaction that cancelled its
    registration, released its seat and marked it REFUNDED (PostgreSQL's commit timestamps, which
    the local stack tracks). Empty when the server does not track them; the poll's times stand."""
    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        if await conn.fetchval("SELECT current_setting('track_commit_timestamp')") != "on":
            return {}
        rows = await conn.fetch(
            "SELECT id::text, pg_xact_commit_timestamp(xmin) AS at FROM orders"
            " WHERE id = ANY($1) AND status = 'REFUNDED'",
            ids,
        )
        return {r["id"]: r["at"].timestamp() for r in rows if r["at"] is not None}
    finally:
        await conn.close()


async def run(k: int, rate: float) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        print(f"setting up {k} paid orders and their refunds (not timed)…")
        orders = await setup(session, k)
        ids = [uuid.UUID(o["order_id"]) for o in orders]
        sent: dict[str, float] = {}
        seen: dict[str, float] = {}
        orders_db = await asyncpg.connect(pg_dsn("orders"))
        done = asyncio.Event()

        async def poll_orders() -> None:
            while len(seen) < k:
                # only what was settled and not seen yet: a handful of ids, not all k
                waiting = [i for i in ids if str(i) in sent and str(i) not in seen]
                if not waiting:
                    await asyncio.sleep(0.005)
                    continue
                rows = await orders_db.fetch(
                    "SELECT id::text FROM orders WHERE id = ANY($1) AND status = 'REFUNDED'",
                    waiting,
                )
                now = time.time()
                for r in rows:
                    seen.setdefault(r["id"], now)
                await asyncio.sleep(0.01)
            done.set()

        async def settle(i: int, o: dict[str, str]) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[o["order_id"]] = time.time()
            async with session.post(
                f"{sandbox()}/sandbox/refunds/{uuid.UUID(o['refund_id']).hex}/settle",
                json={"status": "SUCCESS"},
            ) as resp:
                assert resp.status == 200, await resp.text()

        cpu_before = cpu_seconds()
        poller = asyncio.create_task(poll_orders())
        start = time.monotonic()
        await asyncio.gather(*(settle(i, o) for i, o in enumerate(orders)))
        try:
            await asyncio.wait_for(done.wait(), timeout=120)
        finally:
            poller.cancel()
            await orders_db.close()
        cpu_after = cpu_seconds()
        committed = await commit_times(ids)

        by_mail: dict[str, float] = {}
        want = {o["email"]: o["order_id"] for o in orders}
        deadline = time.monotonic() + 60
        while len(by_mail) < k and time.monotonic() < deadline:
            async with session.get(f"{mail()}/messages") as resp:
                for m in await resp.json():
                    for to in m["to"]:
                        if to in want and "refund" in m["subject"].lower():
                            received = datetime.fromisoformat(
                                m["received_at"].replace("Z", "+00:00")
                            )
                            by_mail.setdefault(want[to], received.timestamp())
            if len(by_mail) < k:
                await asyncio.sleep(0.2)
        mails_per_order: dict[str, int] = {}
        async with session.get(f"{mail()}/messages") as resp:
            for m in await resp.json():
                for to in m["to"]:
                    if to in want and "refund" in m["subject"].lower():
                        mails_per_order[want[to]] = mails_per_order.get(want[to], 0) + 1

    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        current = await conn.fetchval(
            "SELECT current_quantity FROM ticket_types WHERE event_id = $1",
            uuid.UUID(orders[0]["event_id"]),
        )
        active = await conn.fetchval(
            "SELECT count(*) FROM registrations WHERE order_id = ANY($1) AND status <> 'CANCELLED'",
            ids,
        )
    finally:
        await conn.close()

    oids = [o["order_id"] for o in orders]
    # the commit time where the server tracks it; else when the 10 ms poll saw it (up to ~11 ms late)
    applied = {i: committed.get(i, t) for i, t in seen.items()}
    order_lat = [applied[i] - sent[i] for i in oids if i in applied]
    mail_lat = [by_mail[i] - sent[i] for i in oids if i in by_mail]
    both = [max(applied[i], by_mail[i]) - sent[i] for i in oids if i in applied and i in by_mail]
    first, last = min(sent.values()), max(max(applied.values()), max(by_mail.values(), default=0))
    print(f"settlement: {k} refunds settled by the WeChat Pay sandbox at {rate:g}/s")
    print(
        "  orders side timed by "
        + (
            "its transaction's commit timestamp"
            if len(committed) == len(seen)
            else f"a 10 ms poll ({len(committed)}/{len(seen)} commit timestamps known)"
        )
    )
    print(
        f"  settled and applied: {len(both)}/{k} in {last - first:.2f} s "
        f"({len(both) / (last - first):.0f} settlements/s)"
    )
    print(
        f"  REFUND.SUCCESS sent → registration cancelled + seat released: {latency_line(order_lat)}"
    )
    print(
        f"  REFUND.SUCCESS sent → e-mail accepted by SMTP:               {latency_line(mail_lat)}"
    )
    print(f"  REFUND.SUCCESS sent → both (the figure that counts):          {latency_line(both)}")
    dupes = sum(1 for n in mails_per_order.values() if n > 1)
    print(
        f"  checks: current_quantity {current} (want 0), registrations still active {active} "
        f"(want 0), orders with more than one refund e-mail {dupes} (want 0)"
    )
    print_cpu(cpu_before, cpu_after, k, "settlement")
    print_rss()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=500, help="K paid orders refunded")
    parser.add_argument("--rate", type=float, default=100.0, help="settlements sent per second")
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.rate))


if __name__ == "__main__":
    main()
