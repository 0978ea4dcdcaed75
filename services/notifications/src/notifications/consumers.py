"""Consumers of the notifications service: each queues at most one e-mail per event."""

from __future__ import annotations

from typing import Any

import asyncpg

from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import OrderExpired, OrderPaid, RefundCompleted
from ticketing_shared.envelope import CloudEvent
from ticketing_shared.invite_links import marker

from .service import queue_email
from .settings import Settings


def build_consumer(settings: Settings) -> EventConsumer:
    consumer = EventConsumer(
        "notifications",
        max_attempts=settings.consumer_max_attempts,
        backoff_ms=settings.consumer_backoff_ms,
    )
    base = settings.public_base_url.rstrip("/")

    @consumer.on(OrderPaid)
    async def on_order_paid(conn: asyncpg.Connection, data: OrderPaid, event: CloudEvent) -> None:
        """Payment success e-mail to the buyer, with the invite links of the extra seats."""
        context: dict[str, Any] = {
            **data.model_dump(mode="json"),
            # a marker per invite, replaced by its token only as the mail leaves (invite_links);
            # the tokens of an event of an earlier release are already in it
            "invite_links": [f"{base}/invites/{marker(i)}" for i in data.invite_ids]
            + [f"{base}/invites/{token}" for token in data.invite_tokens],
        }
        await queue_email(
            conn,
            event_id=event.id,
            tenant_id=data.tenant_id,
            template="order_paid",
            recipient=data.buyer_email,
            locale=data.buyer_locale,
            order_id=data.order_id,
            context=context,
        )

    @consumer.on(OrderExpired)
    async def on_order_expired(
        conn: asyncpg.Connection, data: OrderExpired, event: CloudEvent
    ) -> None:
        """Tell the buyer an unpaid order expired and its seats were released."""
        await queue_email(
            conn,
            event_id=event.id,
            tenant_id=data.tenant_id,
            template="order_expired",
            recipient=data.buyer_email,
            locale=data.buyer_locale,
            order_id=data.order_id,
            context=data.model_dump(mode="json"),
        )

    @consumer.on(RefundCompleted)
    async def on_refund_completed(
        conn: asyncpg.Connection, data: RefundCompleted, event: CloudEvent
    ) -> None:
        """Tell the buyer a refund was settled: how much, and whether the order is fully refunded."""
        if not data.buyer_email:
            return
        await queue_email(
            conn,
            event_id=event.id,
            tenant_id=data.tenant_id,
            template="refund_completed",
            recipient=data.buyer_email,
            locale=data.buyer_locale,
            order_id=data.order_id,
            context=data.model_dump(mode="json"),
        )

    return consumer
