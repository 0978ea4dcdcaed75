"""A client that just bought starts paying at once, as clients do: payments learns the order
from orders.events tens of milliseconds later, and the checkout waits for it rather than
answering 404. An order that does not exist is still 404, after the bound."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from .conftest import RefundShop, Shop, Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_checkout_right_after_the_purchase_succeeds_on_the_first_call(
    stack: Stack,
) -> None:
    shop = Shop(stack, "e2e-read-your-writes")
    event_id, tt_id = await shop.event()

    async def buy_and_pay(n: int) -> tuple[int, int]:
        async with shop.client(f"ryw-buyer-{n}") as buyer:
            bought = await buyer.post(
                f"/v1/events/{event_id}/registrations",
                json={"ticket_type_id": tt_id, "quantity": 1},
                headers={"Idempotency-Key": uuid.uuid4().hex},
            )
            assert bought.status_code == 201, bought.text
            order_id = bought.json()["order"]["id"]
            paying = await buyer.post(
                f"/v1/orders/{order_id}/payments", json={"provider": "wechatpay"}
            )
            listed = await buyer.get(f"/v1/orders/{order_id}/payments")
            return paying.status_code, listed.status_code

    try:
        answers = await asyncio.gather(*(buy_and_pay(n) for n in range(20)))
        assert answers == [(201, 200)] * 20
    finally:
        await shop.admin.aclose()


async def test_an_order_that_does_not_exist_is_404_within_the_bound(stack: Stack) -> None:
    """An id created just now (a UUIDv7 of this instant) is waited for, up to the bound; an old
    or random one is answered at once."""
    shop = Shop(stack, "e2e-read-your-writes")
    async with shop.client("ryw-prober") as prober:
        timings = []
        for order_id in (uuid7_now(), uuid.uuid4()):
            started = time.monotonic()
            resp = await prober.post(
                f"/v1/orders/{order_id}/payments", json={"provider": "wechatpay"}
            )
            timings.append(time.monotonic() - started)
            assert resp.status_code == 404 and resp.json()["code"] == "not_found", resp.text
    await shop.admin.aclose()
    fresh, random_id = timings
    assert 1.0 < fresh < 10  # waited for, bounded (2 s by default)
    assert random_id < 1.0  # nothing to wait for


async def test_a_refund_right_after_paid_is_visible_succeeds_on_the_first_call(
    stack: Stack,
) -> None:
    """The organizer refunds each order the moment orders shows it PAID; refunds hears of the
    payment a moment later and the request waits for it rather than answering 409."""
    shop = RefundShop(stack, "e2e-read-your-writes")
    try:
        async with shop.client("ryw-payer") as buyer:
            orders = await asyncio.gather(*(shop.paid_order(buyer, 1) for _ in range(5)))
        answers = await asyncio.gather(*(shop.refund(o["id"]) for o in orders))
        assert [a.status_code for a in answers] == [201] * 5, [a.text for a in answers]
    finally:
        await shop.admin.aclose()


async def test_an_unpaid_orders_refund_is_409_not_404(stack: Stack) -> None:
    """Refunding an order the moment it was bought (unpaid) says why it cannot be, within the
    bound; an order that never existed is still 404."""
    shop = RefundShop(stack, "e2e-read-your-writes")
    try:
        async with shop.client("ryw-unpaid") as buyer:
            order = await shop.order(buyer, 1)
        started = time.monotonic()
        resp = await shop.refund(order["id"])
        assert time.monotonic() - started < 10
        assert resp.status_code == 409, resp.text
        assert resp.json()["code"] == "order_not_refundable"
        assert "not paid yet" in resp.json()["detail"]
        missing = await shop.refund(str(uuid.uuid4()))
        assert missing.status_code == 404, missing.text
    finally:
        await shop.admin.aclose()


def uuid7_now() -> uuid.UUID:
    """A UUIDv7 with this millisecond's timestamp, as the orders service makes them."""
    ms = int(time.time() * 1000)
    rest = uuid.uuid4().int & ((1 << 80) - 1)
    value = (ms << 80) | rest
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return uuid.UUID(int=value)
