"""Consumers of the refunds service: the order read model, buyer cancellations, rejected
payments, and the provider's answers. Each runs in a transaction scoped to the event's tenant."""

from __future__ import annotations

import asyncpg

from ticketing_shared import db
from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import (
    OrderCancelled,
    OrderCreated,
    OrderExpired,
    OrderPaid,
    OrderPaymentRejected,
    PaymentRefundUpdated,
    RegistrationCancellationRequested,
    SeatReturnRequested,
)
from ticketing_shared.envelope import CloudEvent

from . import news
from .settings import Settings


def build_consumer(settings: Settings) -> EventConsumer:
    consumer = EventConsumer(
        "refunds",
        max_attempts=settings.consumer_max_attempts,
        backoff_ms=settings.consumer_backoff_ms,
    )

    @consumer.on_batch(OrderCreated)
    async def on_orders_created(
        conn: asyncpg.Connection, items: list[tuple[OrderCreated, CloudEvent]]
    ) -> None:
        """Remember each order's amount, seats and buyer (one statement)."""
        await db.set_tenant(conn, {data.tenant_id for data, _ in items})
        await news.on_orders_created(conn, [data for data, _ in items])

    @consumer.on(OrderPaid)
    async def on_order_paid(conn: asyncpg.Connection, data: OrderPaid, event: CloudEvent) -> None:
        """The order is paid: it can be refunded."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_order_paid(conn, data)

    @consumer.on(OrderCancelled)
    async def on_order_cancelled(
        conn: asyncpg.Connection, data: OrderCancelled, event: CloudEvent
    ) -> None:
        """An unpaid order was cancelled."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_order_ended(conn, data.order_id)

    @consumer.on(OrderExpired)
    async def on_order_expired(
        conn: asyncpg.Connection, data: OrderExpired, event: CloudEvent
    ) -> None:
        """An unpaid order expired."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_order_ended(conn, data.order_id)

    @consumer.on(RegistrationCancellationRequested)
    async def on_cancellation_requested(
        conn: asyncpg.Connection, data: RegistrationCancellationRequested, event: CloudEvent
    ) -> None:
        """A buyer cancelled a paid seat within the policy: refund the policy amount."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_cancellation_requested(conn, data)

    @consumer.on(SeatReturnRequested)
    async def on_seat_return_requested(
        conn: asyncpg.Connection, data: SeatReturnRequested, event: CloudEvent
    ) -> None:
        """A buyer gives back a gift seat nobody redeemed: refund the policy amount."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_seat_return_requested(conn, data)

    @consumer.on(OrderPaymentRejected)
    async def on_payment_rejected(
        conn: asyncpg.Connection, data: OrderPaymentRejected, event: CloudEvent
    ) -> None:
        """Money the order cannot keep goes back in full."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_payment_rejected(conn, data)

    @consumer.on(PaymentRefundUpdated)
    async def on_provider_update(
        conn: asyncpg.Connection, data: PaymentRefundUpdated, event: CloudEvent
    ) -> None:
        """The provider accepted, queued, settled, refused or canceled a refund."""
        await db.set_tenant(conn, data.tenant_id)
        await news.on_provider_update(conn, data)

    return consumer
