"""Races for the last seats: concurrent purchases through HTTP never oversell."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from .conftest import OrdersService

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_300_concurrent_buyers_for_100_seats_get_exactly_100_orders(
    orders_service: OrdersService,
) -> None:
    async with orders_service.client("admin1", "admin") as admin:
        event = await orders_service.event(admin)
        tt = await orders_service.ticket_type(
            admin, event["id"], max_quantity=100, tiers={1: 990, 2: 1900}
        )
    url = f"{orders_service.api.url}/v1/events/{event['id']}/registrations"
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        start = asyncio.Event()

        async def buy(i: int) -> int:
            headers = {"Authorization": f"Bearer {orders_service.token(f'flash-{i}')}"}
            await start.wait()
            resp = await client.post(
                url, json={"ticket_type_id": tt["id"], "quantity": 1}, headers=headers
            )
            if resp.status_code not in (201, 409):
                raise AssertionError(resp.text)
            if resp.status_code == 409:
                assert resp.json()["code"] == "inventory_exhausted"
            return resp.status_code

        tasks = [asyncio.create_task(buy(i)) for i in range(300)]
        await asyncio.sleep(0)
        start.set()
        statuses = Counter(await asyncio.gather(*tasks))
    assert statuses == {201: 100, 409: 200}
    async with orders_service.client("admin1", "admin") as admin:
        got = (await admin.get(f"/v1/events/{event['id']}")).json()["ticket_types"][0]
    assert got["current_quantity"] == 100
    orders = await orders_service.pool.fetchval(
        "SELECT count(*) FROM orders WHERE ticket_type_id = $1", got["id"]
    )
    assert orders == 100
    await orders_service.check_inventory_invariant()


async def test_multi_seat_orders_racing_for_the_last_seats(orders_service: OrdersService) -> None:
    """Buyers of 2 seats and of 1 seat race for 5 seats: never more than 5 taken."""
    async with orders_service.client("admin1", "admin") as admin:
        event = await orders_service.event(admin)
        tt = await orders_service.ticket_type(
            admin, event["id"], max_quantity=5, tiers={1: 990, 2: 1900}
        )
    url = f"/v1/events/{event['id']}/registrations"

    async def buy(i: int) -> int:
        async with orders_service.client(f"multi-{i}") as c:
            resp = await c.post(
                url, json={"ticket_type_id": tt["id"], "quantity": 2 if i % 2 else 1}
            )
            return resp.json()["order"]["quantity"] if resp.status_code == 201 else 0

    taken = await asyncio.gather(*(buy(i) for i in range(40)))
    async with orders_service.client("admin1", "admin") as admin:
        current = (await admin.get(f"/v1/events/{event['id']}")).json()["ticket_types"][0][
            "current_quantity"
        ]
    assert sum(taken) == current <= 5
    # a 1-seat buyer fails only when all 5 are gone, and 20 of them cannot all succeed: sold out
    assert current == 5
    await orders_service.check_inventory_invariant()
