"""Consumers of the orders service: payment outcomes, refunds in flight and their settlements.

Each handler scopes the transaction to the tenant the event names (row-level security): an event
naming the wrong tenant for its order finds no order and changes nothing."""

from __future__ import annotations

import asyncpg

from ticketing_shared import db
from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import PaymentSucceeded, RefundCompleted, RefundStatusChanged
from ticketing_shared.envelope import CloudEvent

from .service import payment_outcome, refund_outcome
from .settings import Settings


def build_consumer(settings: Settings) -> EventConsumer:
    consumer = EventConsumer(
        "orders",
        max_attempts=settings.consumer_max_attempts,
        backoff_ms=settings.consumer_backoff_ms,
    )

    @consumer.on(PaymentSucceeded)
    async def on_payment_succeeded(
        conn: asyncpg.Connection, data: PaymentSucceeded, event: CloudEvent
    ) -> None:
        """PENDING → PAID; a late payment revives the order or asks for a refund."""
        await db.set_tenant(conn, data.tenant_id)
        await payment_outcome.apply_payment(conn, data)

    @consumer.on(RefundCompleted)
    async def on_refund_completed(
        conn: asyncpg.Connection, data: RefundCompleted, event: CloudEvent
    ) -> None:
        """A settled refund voids its seats, cancels their registrations and releases them."""
        await db.set_tenant(conn, data.tenant_id)
        await refund_outcome.apply_refund(conn, data)

    @consumer.on(RefundStatusChanged)
    async def on_refund_status_changed(
        conn: asyncpg.Connection, data: RefundStatusChanged, event: CloudEvent
    ) -> None:
        """A refund in flight shows the order REFUND_PENDING; a failed or canceled one ends that."""
        await db.set_tenant(conn, data.tenant_id)
        await refund_outcome.apply_refund_status(conn, data)

    return consumer
