"""The provider task loop paces its retries: a task Mollie refused with 429 and a Retry-After
longer than a call may wait comes back no earlier than that, and tasks that failed together come
back spread out (jitter), not in the same instant. A real payments database, the Mollie sandbox
over real HTTP."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import pytest
import pytest_asyncio

from payments import tasks
from payments.flows import Flows, MollieFlow, WeChatPayFlow
from payments.providers.mollie import MollieClient
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db

from .sandboxes import mollie_sandbox

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


class Bench:
    def __init__(
        self,
        pool: asyncpg.Pool,
        peek: asyncpg.Pool,
        mollie: MollieClient,
        control: httpx.AsyncClient,
    ) -> None:
        self.pool, self.peek, self.mollie, self.control = pool, peek, mollie, control
        fees = {"fee_bps": 0, "app_fee_bps": 0}
        self.flows = Flows(
            # no WeChat Pay here: what its flow is asked below needs no call to it
            wechatpay=WeChatPayFlow(cast(Any, None), **fees),
            mollie=MollieFlow(mollie, fee_fixed=0, **fees),
        )

    async def close_task(self) -> tuple[uuid.UUID, str]:
        """An open Mollie payment of an order, and the task that cancels it at Mollie: the task's
        id and the payment's ``tr_…``."""
        order_id, payment_id, task_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        created = await self.mollie.create_payment(
            amount=1000,
            currency="EUR",
            description="pacing",
            order_id=str(order_id),
            payment_id=str(payment_id),
        )
        await self.peek.execute(
            """
            INSERT INTO orders_view (order_id, tenant_id, buyer_id, total_amount, currency,
                                     expires_at)
            VALUES ($1, 't-pacing', 'b', 1000, 'EUR', now())
            """,
            order_id,
        )
        await self.peek.execute(
            """
            INSERT INTO payments (id, order_id, provider, payment_method, out_trade_no, amount,
                                  currency, provider_payment_id, tenant_id)
            VALUES ($1, $2, 'mollie', 'redirect', $3, 1000, 'EUR', $4, 't-pacing')
            """,
            payment_id,
            order_id,
            payment_id.hex,
            created["id"],
        )
        await self.peek.execute(
            """
            INSERT INTO provider_tasks (id, kind, provider, reference, payload, tenant_id)
            VALUES ($1, 'close', 'mollie', $2, $3, 't-pacing')
            """,
            task_id,
            str(payment_id),
            {"payment_id": str(payment_id)},
        )
        return task_id, str(created["id"])

    async def fault(self, endpoint: str = "cancel_payment", **fault: Any) -> None:
        resp = await self.control.post("/sandbox/faults", json={"endpoint": endpoint, **fault})
        assert resp.status_code == 201, resp.text

    async def calls(self, endpoint: str) -> int:
        listed = await self.control.get("/sandbox/requests", params={"endpoint": endpoint})
        return int(listed.json()["count"])

    async def run(self) -> None:
        await tasks.run_due_tasks(self.pool, self.flows, limit=50, max_attempts=10)

    async def waits(self, closing: list[tuple[uuid.UUID, str]]) -> list[float]:
        """Per task, the seconds from its failure (the sandbox's arrival time of its last cancel
        call) to its next attempt; each must be pending again after one failed attempt."""
        waits = []
        for task_id, tr in closing:
            row = await self.peek.fetchrow(
                "SELECT status, attempts, next_attempt_at FROM provider_tasks WHERE id = $1",
                task_id,
            )
            assert (row["status"], row["attempts"]) == ("PENDING", 1)
            calls = await self.control.get(
                "/sandbox/requests", params={"endpoint": "cancel_payment", "payment_id": tr}
            )
            last = datetime.fromisoformat(calls.json()["requests"][-1]["at"])
            waits.append((row["next_attempt_at"] - last).total_seconds())
        return waits


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def bench(infra: Infra) -> AsyncIterator[Bench]:
    dsn = await infra.fresh_database(
        "payments_pacing", db.shared_migrations() + db.dir_migrations("payments", MIGRATIONS)
    )
    # the worker runs provider tasks and reconciliation on connections scoped to all tenants
    pool = await db.create_pool(dsn, min_size=1, max_size=4, all_tenants=True)
    peek = await db.create_pool(infra.admin_dsn(dsn), min_size=1, max_size=2)
    try:
        async with mollie_sandbox(backoff_s=0.001, budget_s=2.0) as (_url, mollie, control):
            yield Bench(pool, peek, mollie, control)
    finally:
        await pool.close()
        await peek.close()


async def test_a_retry_after_beyond_the_call_budget_sets_the_next_attempt(bench: Bench) -> None:
    closing = await bench.close_task()
    await bench.fault(status=429, retry_after=120)
    await bench.run()
    (wait,) = await bench.waits([closing])
    # the plain backoff after a first failure is 1-2 s: only the Retry-After explains this
    assert 120 <= wait <= 120 * 1.2 + 1


async def test_tasks_that_failed_together_come_back_spread_out(bench: Bench) -> None:
    closing = [await bench.close_task() for _ in range(12)]
    # every call of every task fails (4 attempts each), without a Retry-After
    await bench.fault(status=503, times=4 * len(closing))
    await bench.run()
    waits = await bench.waits(closing)
    # 2 s after a first failure, with equal jitter: 1-2 s (and the few ms the call took)
    assert all(0.95 <= w <= 2.1 for w in waits), waits
    assert max(waits) - min(waits) > 0.2, waits  # not the same pause for all of them


async def test_reconciliation_stops_asking_while_mollie_rate_limits(bench: Bench) -> None:
    for _ in range(3):
        await bench.close_task()  # open attempts, due for a look (after_s=0 below)
    before = await bench.calls("get_payment")
    await bench.fault("get_payment", status=429, retry_after=120)
    asked = await bench.flows.mollie.reconcile(bench.pool, after_s=0, every_s=0)
    assert asked >= 3
    # the first answer said the key is rate limited: the others are left for their next turn
    assert await bench.calls("get_payment") - before == 1


async def test_a_task_no_handler_knows_fails_loudly_instead_of_passing_for_done(
    bench: Bench,
) -> None:
    # what a flow cannot do (WeChat Pay has no way to withdraw a refund: no such task is ever
    # written), a provider we do not have (a release that wrote what this one does not know):
    # each fails, with the reason, rather than being marked done
    unknown = {
        uuid.uuid4(): ("cancel_refund", "wechatpay", "WeChat Pay cannot withdraw a refund"),
        uuid.uuid4(): ("refund", "paypal", "no flow for the provider 'paypal'"),
    }
    for task_id, (kind, provider, _) in unknown.items():
        await bench.peek.execute(
            """
            INSERT INTO provider_tasks (id, kind, provider, reference, payload, tenant_id)
            VALUES ($1, $2, $3, 'x', '{}', 't-pacing')
            """,
            task_id,
            kind,
            provider,
        )
    await bench.run()
    for task_id, (_, _, reason) in unknown.items():
        row = await bench.peek.fetchrow(
            "SELECT status, last_error FROM provider_tasks WHERE id = $1", task_id
        )
        assert row["status"] == "FAILED"
        assert reason in row["last_error"]
