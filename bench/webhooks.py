"""WeChat Pay notifications per second that ONE payments api process verifies and records.

Creates K real orders through the gateway, registers a payment attempt for each in the payments
database (as checkout would), then posts K signed, encrypted TRANSACTION.SUCCESS notifications
straight to one payments api process (not through the gateway), C at a time, and prints
notifications/s, p50/p99 latency, the CPU each process spent and the peak RSS of the processes.

    make up && uv run python bench/webhooks.py --orders 3000 --concurrency 32

By default everything else of the stack runs meanwhile on the same cores (the workers consume
the resulting ``payment.succeeded`` events, orders are marked paid, e-mails are sent).
``--workers-elsewhere`` measures the api process as it would run beside workers deployed on
other machines: the four workers and the broker are paused (SIGSTOP) while the notifications
are posted, then resumed, and the bench waits until every order is PAID (nothing was lost, only
deferred).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from _common import (
    RUN,
    WORKERS_AND_BROKER,
    cpu_seconds,
    gateway,
    latency_line,
    paused,
    pg_dsn,
    port,
    print_cpu,
    print_rss,
    token,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ticketing_local.sandbox.wechat.config import SandboxConfig
from ticketing_local.sandbox.wechat.crypto import seal_resource, sign_headers

TENANT = "bench-webhooks"


async def make_orders(session: aiohttp.ClientSession, count: int) -> list[str]:
    admin = {"Authorization": f"Bearer {token('bench-admin', roles={TENANT: 'owner'})}"}
    async with session.post(
        f"{gateway()}/v1/tenants/{TENANT}/events",
        headers=admin,
        json={
            "title": "Webhook bench",
            "starts_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
            "require_approval": False,
            "currency": "CNY",
        },
    ) as r:
        event = await r.json()
    async with session.post(
        f"{gateway()}/v1/events/{event['id']}/ticket-types",
        headers=admin,
        json={
            "name": "GA",
            "max_quantity": count,
            "price_tiers": [{"quantity": 1, "total_amount": 9900}],
        },
    ) as r:
        tt = await r.json()
    ids: list[str] = []
    sem = asyncio.Semaphore(32)

    async def buy() -> None:
        async with (
            sem,
            session.post(
                f"{gateway()}/v1/events/{event['id']}/registrations",
                json={"ticket_type_id": tt["id"], "quantity": 1},
                headers={"Authorization": f"Bearer {token(f'wh-{uuid.uuid4().hex[:10]}')}"},
            ) as r,
        ):
            ids.append((await r.json())["order"]["id"])

    await asyncio.gather(*(buy() for _ in range(count)))
    return ids


async def register_attempts(order_ids: list[str]) -> None:
    """What checkout would store (without a provider round trip per order)."""
    conn = await asyncpg.connect(pg_dsn("payments"))
    try:
        deadline = time.monotonic() + 120
        while await conn.fetchval(
            "SELECT count(*) FROM orders_view WHERE order_id = ANY($1::uuid[])", order_ids
        ) < len(order_ids):
            if time.monotonic() > deadline:
                raise SystemExit("payments did not learn the orders in time")
            await asyncio.sleep(0.2)
        await conn.executemany(
            """INSERT INTO payments (id, order_id, provider, payment_method, out_trade_no, amount, currency)
               VALUES (gen_random_uuid(), $1, 'wechatpay', 'NATIVE', $2, 9900, 'CNY') ON CONFLICT DO NOTHING""",
            [(uuid.UUID(o), uuid.UUID(o).hex) for o in order_ids],
        )
    finally:
        await conn.close()


def notifications(order_ids: list[str]) -> list[tuple[bytes, dict[str, str]]]:
    """TRANSACTION.SUCCESS notifications for the orders, sealed and signed exactly as the WeChat
    Pay sandbox sends them (its own crypto, the stack's keys)."""
    config = SandboxConfig.from_keys_dir(RUN / "keys")
    aes = AESGCM(config.apiv3_key.encode())
    out = []
    for order_id in order_ids:
        tx = {
            "mchid": config.mchid,
            "appid": config.appid,
            "out_trade_no": uuid.UUID(order_id).hex,
            "transaction_id": "42" + "".join(secrets.choice("0123456789") for _ in range(26)),
            "trade_type": "NATIVE",
            "trade_state": "SUCCESS",
            "trade_state_desc": "支付成功",
            "bank_type": "OTHERS",
            "attach": "",
            "success_time": datetime.now(UTC).isoformat(),
            "payer": {"openid": "o-bench"},
            "amount": {
                "total": 9900,
                "payer_total": 9900,
                "currency": "CNY",
                "payer_currency": "CNY",
            },
        }
        body = json.dumps(
            {
                "id": str(uuid.uuid4()),
                "create_time": datetime.now(UTC).isoformat(),
                "resource_type": "encrypt-resource",
                "event_type": "TRANSACTION.SUCCESS",
                "summary": "支付成功",
                "resource": seal_resource(aes, "transaction", tx),
            }
        ).encode()
        out.append((body, {**sign_headers(config, body), "Content-Type": "application/json"}))
    return out


async def wait_all_paid(order_ids: list[str], timeout: float = 300) -> float:
    """Seconds until orders shows every order PAID."""
    started = time.perf_counter()
    conn = await asyncpg.connect(pg_dsn("orders"))
    try:
        while time.perf_counter() - started < timeout:
            pending = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE id = ANY($1::uuid[]) AND status <> 'PAID'",
                order_ids,
            )
            if pending == 0:
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise SystemExit(f"orders not all PAID after {timeout} s")


async def run(count: int, concurrency: int, workers_elsewhere: bool) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency * 2)
    ) as session:
        order_ids = await make_orders(session, count)
        await register_attempts(order_ids)
        payloads = notifications(order_ids)
        url = f"http://127.0.0.1:{port('PAYMENTS_API_PORT', 8002)}/v1/webhooks/wechatpay"
        latencies: list[float] = []
        statuses: dict[int, int] = {}
        queue = iter(payloads)

        async def sender() -> None:
            for body, headers in queue:
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - started)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1

        with paused(WORKERS_AND_BROKER, workers_elsewhere):
            cpu_before = {**cpu_seconds(), "bench client": time.process_time()}
            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
            cpu_after = {**cpu_seconds(), "bench client": time.process_time()}
    conn = await asyncpg.connect(pg_dsn("payments"))
    try:
        paid = await conn.fetchval(
            "SELECT count(*) FROM payments WHERE status = 'SUCCEEDED' AND order_id = ANY($1::uuid[])",
            order_ids,
        )
    finally:
        await conn.close()
    where = "workers and broker paused" if workers_elsewhere else "whole stack running"
    print(
        f"webhooks: {count} signed notifications, {concurrency} at a time, to one payments api"
        f" process ({where})"
    )
    print(f"  responses {dict(sorted(statuses.items()))}; payments recorded as paid: {paid}")
    print(f"  {count / elapsed:.0f} notifications/s over {elapsed:.2f} s")
    print(f"  latency: {latency_line(latencies)}")
    print_cpu(cpu_before, cpu_after, count, "notification (while posting)")
    if workers_elsewhere:
        print(f"  workers resumed: every order PAID {await wait_all_paid(order_ids):.1f} s later")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--workers-elsewhere",
        action="store_true",
        help="pause the workers and the broker while posting (as if they ran on other machines)",
    )
    args = parser.parse_args()
    asyncio.run(run(args.orders, args.concurrency, args.workers_elsewhere))
    print_rss()


if __name__ == "__main__":
    main()
