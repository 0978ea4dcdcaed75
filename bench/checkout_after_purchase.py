"""Checkout right after the purchase, as a client does it: N buyers, C at a time, each buys one
seat and at once starts paying with Mollie (the answer needs payments to have learned the order
from orders.events). Prints how the first checkout call answered and its latency percentiles,
and the purchase's for comparison.

    make up && uv run python bench/checkout_after_purchase.py --buyers 300 --concurrency 10
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter

import aiohttp
from _common import gateway, latency_line, token
from flash_sale import setup


async def run(buyers: int, concurrency: int) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        event_id, tt_id = await setup(session, buyers)
        tokens = [f"Bearer {token(f'rw-{uuid.uuid4().hex[:10]}')}" for _ in range(buyers)]
        purchase_s: list[float] = []
        checkout_s: list[float] = []
        answers: Counter[int] = Counter()
        queue = iter(tokens)

        async def buyer() -> None:
            for bearer in queue:
                headers = {"Authorization": bearer, "Idempotency-Key": uuid.uuid4().hex}
                started = time.perf_counter()
                async with session.post(
                    f"{gateway()}/v1/events/{event_id}/registrations",
                    headers=headers,
                    json={"ticket_type_id": tt_id, "quantity": 1},
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    order_id = (await resp.json())["order"]["id"]
                bought = time.perf_counter()
                async with session.post(
                    f"{gateway()}/v1/orders/{order_id}/payments",
                    headers={"Authorization": bearer},
                    json={"provider": "mollie"},
                ) as resp:
                    answers[resp.status] += 1
                    await resp.read()
                purchase_s.append(bought - started)
                checkout_s.append(time.perf_counter() - bought)

        await asyncio.gather(*(buyer() for _ in range(concurrency)))
    print(f"checkout right after purchase: {buyers} buyers, {concurrency} at a time")
    print(f"  first checkout call answered: {dict(sorted(answers.items()))}")
    print(f"  checkout: {latency_line(checkout_s)}")
    print(f"  purchase: {latency_line(purchase_s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--buyers", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.buyers, args.concurrency))


if __name__ == "__main__":
    main()
