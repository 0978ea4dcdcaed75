"""The Mollie adapter against the Mollie sandbox (served in-process on a free port, real HTTP):
idempotency keys from our ids, retries only where Mollie may not have acted (and no earlier than
Mollie's Retry-After), errors mapped."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from payments.providers.mollie import MollieClient, MollieError

from .sandboxes import mollie_sandbox

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Bench:
    def __init__(self, url: str, client: MollieClient, control: httpx.AsyncClient) -> None:
        self.url, self.client, self.control = url, client, control

    async def paid(self, value: int = 3000) -> str:
        created = await self.client.create_payment(
            amount=value,
            currency="EUR",
            description="adapter test",
            order_id=str(uuid.uuid4()),
            payment_id=str(uuid.uuid4()),
        )
        assert created["status"] == "open" and created["_links"]["checkout"]["href"]
        paid = await self.control.post(f"/sandbox/payments/{created['id']}/pay")
        assert paid.status_code == 200, paid.text
        return str(created["id"])

    async def fault(self, endpoint: str, status: int, times: int) -> None:
        resp = await self.control.post(
            "/sandbox/faults", json={"endpoint": endpoint, "status": status, "times": times}
        )
        assert resp.status_code in (200, 201), resp.text

    async def gets(self, tr: str) -> list[datetime]:
        """When the sandbox received each GET of payment ``tr`` (its own request log)."""
        listed = await self.control.get(
            "/sandbox/requests", params={"endpoint": "get_payment", "payment_id": tr}
        )
        return [datetime.fromisoformat(r["at"]) for r in listed.json()["requests"]]

    async def faults_left(self) -> int:
        faults: list[dict[str, Any]] = (await self.control.get("/sandbox/faults")).json()["faults"]
        return sum(int(f["times"]) for f in faults)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bench() -> AsyncIterator[Bench]:
    async with mollie_sandbox(backoff_s=0.01) as (url, client, control):
        yield Bench(url, client, control)


async def test_a_retried_refund_is_the_same_refund(bench: Bench) -> None:
    tr = await bench.paid()
    refund_id = str(uuid.uuid4())
    first = await bench.client.create_refund(tr, amount=1000, currency="EUR", refund_id=refund_id)
    again = await bench.client.create_refund(tr, amount=1000, currency="EUR", refund_id=refund_id)
    assert first["id"] == again["id"] and first["status"] == "pending"
    assert first["amount"] == {"currency": "EUR", "value": "10.00"}
    assert first["metadata"] == {"refund_id": refund_id}
    assert [r["id"] for r in await bench.client.list_refunds(tr)] == [first["id"]]


async def test_5xx_is_retried_with_the_same_key_and_refunds_once(bench: Bench) -> None:
    tr = await bench.paid()
    await bench.fault("create_refund", 503, 2)
    made = await bench.client.create_refund(tr, amount=700, currency="EUR", refund_id="r-503")
    assert made["status"] == "pending" and await bench.faults_left() == 0
    assert [r["id"] for r in await bench.client.list_refunds(tr)] == [made["id"]]


async def test_other_4xx_are_never_retried(bench: Bench) -> None:
    tr = await bench.paid()
    await bench.fault("create_refund", 422, 3)
    with pytest.raises(MollieError) as caught:
        await bench.client.create_refund(tr, amount=700, currency="EUR", refund_id="r-422")
    assert caught.value.status == 422 and not caught.value.retryable
    assert await bench.faults_left() == 2  # one call made, not four
    await bench.control.delete("/sandbox/faults")
    assert await bench.client.list_refunds(tr) == []


async def test_mollie_refusals_map_to_codes(bench: Bench) -> None:
    tr = await bench.paid(2000)
    await bench.client.create_refund(tr, amount=500, currency="EUR", refund_id="r-1")
    with pytest.raises(MollieError) as duplicate:
        await bench.client.create_refund(tr, amount=500, currency="EUR", refund_id="r-2")
    assert duplicate.value.code == "duplicate_refund" and not duplicate.value.retryable
    with pytest.raises(MollieError) as over:
        await bench.client.create_refund(tr, amount=1600, currency="EUR", refund_id="r-3")
    assert over.value.code == "amount_not_refundable" and over.value.field == "amount.value"
    with pytest.raises(MollieError) as unknown:
        await bench.client.get_payment("tr_Unknown123")
    assert unknown.value.code == "not_found"


async def test_cancel_a_pending_refund_then_it_is_gone(bench: Bench) -> None:
    tr = await bench.paid()
    made = await bench.client.create_refund(tr, amount=300, currency="EUR", refund_id="r-c")
    await bench.client.cancel_refund(tr, made["id"])
    with pytest.raises(MollieError) as gone:
        await bench.client.get_refund(tr, made["id"])
    assert gone.value.status == 404
    payment = await bench.client.get_payment(tr)
    assert payment["status"] == "paid" and payment["amountRemaining"]["value"] == "30.00"


async def test_cancel_an_open_payment(bench: Bench) -> None:
    created = await bench.client.create_payment(
        amount=1234,
        currency="EUR",
        description="to be closed",
        order_id=str(uuid.uuid4()),
        payment_id=str(uuid.uuid4()),
    )
    canceled = await bench.client.cancel_payment(created["id"])
    assert canceled["status"] == "canceled"
    with pytest.raises(MollieError) as refused:
        await bench.client.cancel_payment(created["id"])
    assert refused.value.status == 422 and not refused.value.retryable


async def test_a_429_is_retried_no_earlier_than_its_retry_after(bench: Bench) -> None:
    tr = await bench.paid()
    resp = await bench.control.post(
        "/sandbox/faults",
        json={"endpoint": "get_payment", "status": 429, "retry_after": 1, "times": 1},
    )
    assert resp.status_code == 201, resp.text
    fetched = await bench.client.get_payment(tr)
    assert fetched["status"] == "paid"
    first, second = await bench.gets(tr)
    # backoff_s is 0.01 here: only the Retry-After explains a pause this long
    assert 1.0 <= (second - first).total_seconds() < 3.0


async def test_a_retry_after_longer_than_the_budget_is_left_to_the_caller(bench: Bench) -> None:
    tr = await bench.paid()
    impatient = MollieClient(bench.client.config, bench.client.http, budget_s=1.0)
    resp = await bench.control.post(
        "/sandbox/faults",
        json={"endpoint": "get_payment", "status": 429, "retry_after": 3, "times": 1},
    )
    assert resp.status_code == 201, resp.text
    started = time.monotonic()
    with pytest.raises(MollieError) as caught:
        await impatient.get_payment(tr)
    assert time.monotonic() - started < 1.0
    assert caught.value.retryable and caught.value.retry_after_s == 3.0
    assert len(await bench.gets(tr)) == 1
