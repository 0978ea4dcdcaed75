"""The refund.completed consumer on a real PostgreSQL: one e-mail per event, even when redelivered."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from notifications.consumers import build_consumer
from notifications.settings import Settings
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.consumer import EventConsumer, Record
from ticketing_shared.contracts import REFUNDS_EVENTS, RefundCompleted
from ticketing_shared.envelope import CloudEvent

pytestmark = pytest.mark.asyncio(loop_scope="session")

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dsn(infra: Infra) -> str:
    return await infra.fresh_database(
        "notifications", db.shared_migrations() + db.dir_migrations("notifications", MIGRATIONS)
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool(dsn: str) -> AsyncIterator[asyncpg.Pool]:
    p = await db.create_pool(dsn, min_size=1, max_size=4)
    yield p
    await p.close()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def peek(infra: Infra, dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """What the tests look at, as the superuser: row-level security would hide the rows from
    the service's own role."""
    p = await db.create_pool(infra.admin_dsn(dsn), min_size=1, max_size=2)
    yield p
    await p.close()


@pytest.fixture
def consumer(pool: asyncpg.Pool) -> EventConsumer:
    c = build_consumer(Settings(consumer_backoff_ms=1))
    c.pool = pool  # no producer: nothing here may be dead-lettered
    return c


def refund_completed(**overrides: object) -> RefundCompleted:
    fields: dict[str, object] = {
        "refund_id": uuid.uuid4(),
        "order_id": uuid.uuid4(),
        "tenant_id": "t-demo",
        "amount": 2800,
        "currency": "EUR",
        "reason": "organizer",
        "note": "The show moved to a smaller hall",
        "voided_seat_ids": [uuid.uuid4(), uuid.uuid4()],
        "fully_refunded": False,
        "refunded_total": 2800,
        "refunded_at": datetime.now(UTC),
        "buyer_email": f"buyer-{uuid.uuid4().hex[:8]}@example.test",
        "buyer_locale": "nl-NL",
        "event_title": "Gala",
    }
    fields.update(overrides)
    return RefundCompleted.model_validate(fields)


def record(data: RefundCompleted, *, event_id: uuid.UUID, offset: int) -> Record:
    event = CloudEvent(
        id=event_id,
        type=data.ce_type,
        source="refunds",
        subject=str(data.order_id),
        time=datetime.now(UTC),
        data=data.model_dump(mode="json"),
        dataschema=data.dataschema(),
    )
    return Record(REFUNDS_EVENTS, 0, offset, event.key(), event.value(), event.headers())


async def test_refund_completed_queues_one_mail_in_the_buyer_language_even_when_redelivered(
    consumer: EventConsumer, peek: asyncpg.Pool
) -> None:
    data = refund_completed()
    event_id = uuid.uuid4()

    await consumer.handle(record(data, event_id=event_id, offset=1))
    # the same event read again (offset not committed before a crash, or an operator's replay)
    await consumer.handle(record(data, event_id=event_id, offset=1))
    await consumer.handle(record(data, event_id=event_id, offset=7))

    rows = await peek.fetch("SELECT * FROM deliveries WHERE event_id = $1", event_id)
    assert len(rows) == 1
    mail = rows[0]
    assert mail["template"] == "refund_completed"
    assert mail["recipient"] == data.buyer_email
    assert mail["order_id"] == data.order_id
    assert mail["locale"] == "nl" and mail["status"] == "pending"
    assert str(data.order_id) in mail["subject"]
    assert "€\xa028,00" in mail["body_text"] and "Gala" in mail["body_text"]
    assert "in totaal" in mail["body_text"]
    assert mail["body_html"] and "Gala" in mail["body_html"]
    assert "2 plaatsen geannuleerd" in mail["body_text"]
    assert "The show moved to a smaller hall" in mail["body_text"]
    assert await peek.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_each_refund_of_an_order_gets_its_own_mail(
    consumer: EventConsumer, peek: asyncpg.Pool
) -> None:
    first = refund_completed(buyer_locale="en", voided_seat_ids=[], note=None)
    second = refund_completed(
        order_id=first.order_id,
        buyer_email=first.buyer_email,
        buyer_locale="en",
        fully_refunded=True,
        refunded_total=5600,
    )

    await consumer.handle(record(first, event_id=uuid.uuid4(), offset=10))
    await consumer.handle(record(second, event_id=uuid.uuid4(), offset=11))

    rows = await peek.fetch(
        "SELECT body_text FROM deliveries WHERE order_id = $1 ORDER BY created_at", first.order_id
    )
    assert [("fully refunded" in r["body_text"]) for r in rows] == [False, True]


async def test_refund_completed_without_buyer_email_sends_nothing(
    consumer: EventConsumer, peek: asyncpg.Pool
) -> None:
    data = refund_completed(buyer_email="")
    event_id = uuid.uuid4()

    await consumer.handle(record(data, event_id=event_id, offset=20))

    assert await peek.fetchval("SELECT count(*) FROM deliveries WHERE event_id = $1", event_id) == 0
    assert await peek.fetchval("SELECT count(*) FROM dead_letters") == 0
