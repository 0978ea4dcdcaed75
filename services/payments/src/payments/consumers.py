"""Consumers of the payments service: the order read model, closing abandoned payments, and
executing (or withdrawing) refunds."""

from __future__ import annotations

import asyncpg

from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import (
    OrderCancelled,
    OrderCreated,
    OrderExpired,
    OrderPaid,
    RefundCancelRequested,
    RefundRequested,
)
from ticketing_shared.envelope import CloudEvent

from . import refunds, service
from .settings import Settings


def build_consumer(settings: Settings) -> EventConsumer:
    consumer = EventConsumer(
        "payments",
        max_attempts=settings.consumer_max_attempts,
        backoff_ms=settings.consumer_backoff_ms,
    )

    @consumer.on_batch(OrderCreated)
    async def on_orders_created(
        conn: asyncpg.Connection, items: list[tuple[OrderCreated, CloudEvent]]
    ) -> None:
        """Keep each order's amount, currency, buyer and expiry for checkout (one statement)."""
        await service.on_orders_created(conn, [data for data, _ in items])

    @consumer.on(OrderPaid)
    async def on_order_paid(conn: asyncpg.Connection, data: OrderPaid, event: CloudEvent) -> None:
        """The order is paid: no further checkout."""
        await service.on_order_paid(conn, data.order_id)

    @consumer.on(OrderCancelled)
    async def on_order_cancelled(
        conn: asyncpg.Connection, data: OrderCancelled, event: CloudEvent
    ) -> None:
        """Close the open provider transaction of a cancelled order."""
        await service.on_order_ended(conn, data.order_id)

    @consumer.on(OrderExpired)
    async def on_order_expired(
        conn: asyncpg.Connection, data: OrderExpired, event: CloudEvent
    ) -> None:
        """Close the open provider transaction of an expired order."""
        await service.on_order_ended(conn, data.order_id)

    @consumer.on(RefundRequested)
    async def on_refund_requested(
        conn: asyncpg.Connection, data: RefundRequested, event: CloudEvent
    ) -> None:
        """Execute a refund at the provider (after the commit, retried with the same number)."""
        await refunds.on_refund_requested(conn, data)

    @consumer.on(RefundCancelRequested)
    async def on_refund_cancel_requested(
        conn: asyncpg.Connection, data: RefundCancelRequested, event: CloudEvent
    ) -> None:
        """Withdraw a refund not sent to the provider yet."""
        await refunds.on_refund_cancel_requested(conn, data)

    return consumer
