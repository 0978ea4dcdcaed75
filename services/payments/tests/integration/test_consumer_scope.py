"""A consumer's batch may hold several tenants' events: each is applied under its own tenant
only, so an event of one tenant that names another tenant's order changes nothing of it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from payments.consumers import build_consumer
from payments.settings import Settings
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.consumer import Record
from ticketing_shared.contracts import ORDERS_EVENTS, EventData, OrderPaid
from ticketing_shared.envelope import CloudEvent

pytestmark = pytest.mark.asyncio(loop_scope="session")
MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def _record(offset: int, data: EventData, subject: uuid.UUID) -> Record:
    event = CloudEvent(
        id=uuid.uuid4(),
        type=data.ce_type,
        source="orders",
        subject=str(subject),
        time=datetime.now(UTC),
        data=data.model_dump(mode="json"),
    )
    return Record(ORDERS_EVENTS, 0, offset, event.key(), event.value(), event.headers())


def _paid(tenant: str, order_id: uuid.UUID) -> OrderPaid:
    return OrderPaid(
        order_id=order_id,
        tenant_id=tenant,
        buyer_id="b",
        buyer_email="b@example.test",
        quantity=1,
        total_amount=100,
        currency="EUR",
        transaction_id="tx",
        paid_at=datetime.now(UTC),
    )


async def test_an_event_of_one_tenant_in_a_mixed_batch_cannot_touch_another_tenants_order(
    infra: Infra,
) -> None:
    dsn = await infra.fresh_database(
        "payments_scope", db.shared_migrations() + db.dir_migrations("payments", MIGRATIONS)
    )
    orders = {"t-a": uuid.uuid4(), "t-b": uuid.uuid4()}
    admin = await asyncpg.connect(infra.admin_dsn(dsn))
    try:
        for tenant, order_id in orders.items():
            await admin.execute(
                "INSERT INTO orders_view (order_id, tenant_id, buyer_id, total_amount, currency,"
                " expires_at) VALUES ($1, $2, 'b', 100, 'EUR', $3)",
                order_id,
                tenant,
                datetime.now(UTC) + timedelta(minutes=30),
            )
        pool = await db.create_pool(dsn, min_size=1, max_size=2)
        consumer = build_consumer(Settings(consumer_backoff_ms=1))
        consumer.pool = pool  # nothing here may be dead-lettered: no producer
        try:
            # t-a's own order, then an event of t-a that names t-b's order, then t-b's: one batch
            await consumer.handle_batch(
                [
                    _record(0, _paid("t-a", orders["t-a"]), orders["t-a"]),
                    _record(1, _paid("t-a", orders["t-b"]), orders["t-b"]),
                    _record(2, _paid("t-b", uuid.uuid4()), uuid.uuid4()),
                ]
            )
        finally:
            await pool.close()
        status = dict(await admin.fetch("SELECT tenant_id, status FROM orders_view"))
        claims = await admin.fetchval("SELECT count(*) FROM inbox")
    finally:
        await admin.close()
    assert status == {"t-a": "PAID", "t-b": "PENDING"}
    assert claims == 3
