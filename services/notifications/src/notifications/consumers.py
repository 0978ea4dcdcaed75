"""Consumers of the notifications service: each queues at most one e-mail per event (and
template and recipient), in the recipient's locale.

Who is told what:

- the buyer: order paid (or revived by a late payment), order expired, a payment we cannot keep,
  a refund settled or failed, an invite of theirs redeemed, a gift seat they gave back;
- the registrant: approved, rejected, their cancellation received (with the refund amount),
  their registration cancelled (by themselves, the organizer, or a refund of the seat they were
  given), the event rescheduled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg

from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import (
    EventData,
    EventRescheduled,
    InviteRedeemed,
    OrderExpired,
    OrderPaid,
    OrderPaymentRejected,
    RefundCompleted,
    RefundFailed,
    RegistrationApproved,
    RegistrationCancellationRequested,
    RegistrationCancelled,
    RegistrationRejected,
    SeatReturnRequested,
)
from ticketing_shared.envelope import CloudEvent
from ticketing_shared.invite_links import marker

from .service import queue_email
from .settings import Settings

# event type → (template, who gets it, in which locale); the buyer's or the registrant's
_BUYER = ("buyer_email", "buyer_locale")
_REGISTRANT = ("email", "locale")
MAILS: dict[type[EventData], tuple[str, tuple[str, str]]] = {
    OrderExpired: ("order_expired", _BUYER),
    OrderPaymentRejected: ("payment_rejected", _BUYER),
    RefundCompleted: ("refund_completed", _BUYER),
    RefundFailed: ("refund_failed", _BUYER),
    InviteRedeemed: ("invite_redeemed", _BUYER),
    SeatReturnRequested: ("seat_return_requested", _BUYER),
    RegistrationApproved: ("registration_approved", _REGISTRANT),
    RegistrationRejected: ("registration_rejected", _REGISTRANT),
    RegistrationCancellationRequested: ("cancellation_requested", _REGISTRANT),
    RegistrationCancelled: ("registration_cancelled", _REGISTRANT),
    EventRescheduled: ("event_rescheduled", _REGISTRANT),
}


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

    for event_type, (template, (to, locale)) in MAILS.items():
        consumer.on(event_type)(_teller(template, to, locale))

    return consumer


def _teller(
    template: str, to: str, locale: str
) -> Callable[[asyncpg.Connection, Any, CloudEvent], Any]:
    async def tell(conn: asyncpg.Connection, data: Any, event: CloudEvent) -> None:
        await queue_email(
            conn,
            event_id=event.id,
            tenant_id=data.tenant_id,
            template=template,
            recipient=getattr(data, to),
            locale=getattr(data, locale),
            order_id=getattr(data, "order_id", None),
            context=data.model_dump(mode="json"),
        )

    tell.__name__ = tell.__qualname__ = f"tell_{template}"
    tell.__doc__ = f"Queue the {template.replace('_', ' ')} e-mail."
    return tell
