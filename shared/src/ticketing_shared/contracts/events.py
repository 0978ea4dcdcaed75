"""Event payloads, grouped by the topic they are published on.

Money is an integer in minor units plus an ISO 4217 currency; times are UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from .base import EventData
from .topics import ORDERS_EVENTS, PAYMENTS_EVENTS, REFUNDS_EVENTS


class SeatInfo(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    seat_id: UUID
    registration_id: UUID | None = None


class _OrderEvent(EventData):
    topic: ClassVar[str] = ORDERS_EVENTS

    order_id: UUID
    tenant_id: str


class OrderCreated(_OrderEvent):
    """A paid order was placed and holds inventory until ``expires_at``."""

    ce_type: ClassVar[str] = "order.created"

    event_id: UUID
    ticket_type_id: UUID
    buyer_id: str
    buyer_email: str
    buyer_locale: str = "en"
    quantity: int
    total_amount: int
    currency: str
    expires_at: datetime
    event_title: str = ""
    event_starts_at: datetime | None = None
    seats: list[SeatInfo] = []


class OrderPaid(_OrderEvent):
    """The order's payment succeeded; invites (if any) are open."""

    ce_type: ClassVar[str] = "order.paid"

    buyer_id: str
    buyer_email: str
    buyer_locale: str = "en"
    quantity: int
    total_amount: int
    currency: str
    transaction_id: str
    paid_at: datetime
    event_title: str = ""
    # the open invites of the extra seats, by id: the e-mail derives their links (a token is
    # never written anywhere, events included: ticketing_shared.invite_links)
    invite_ids: list[UUID] = []
    # what events of an earlier release carried instead (tokens); no longer filled
    invite_tokens: list[str] = []
    # paid after the order had expired, and its seats were still free: the order came back
    revived: bool = False


class OrderCancelled(_OrderEvent):
    """A pending order was cancelled by its buyer; its seats were released."""

    ce_type: ClassVar[str] = "order.cancelled"

    reason: str
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class OrderExpired(_OrderEvent):
    """A pending order passed ``expires_at`` unpaid; its seats were released."""

    ce_type: ClassVar[str] = "order.expired"

    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class OrderPaymentRejected(_OrderEvent):
    """Money arrived that the order cannot keep (late payment with no seats left, a second payment):
    the refunds service must return it in full."""

    ce_type: ClassVar[str] = "order.payment_rejected"

    payment_id: UUID | None = None
    transaction_id: str
    provider: str = ""
    amount: int
    currency: str
    reason: str  # late_payment | duplicate_payment | amount_mismatch
    note: str = ""
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class SeatReturnRequested(_OrderEvent):
    """The buyer gives back a gift seat nobody redeemed, within the policy: refund ``amount``
    for ``seat_id``; its settlement voids the seat and its invite."""

    ce_type: ClassVar[str] = "order.seat_return_requested"

    seat_id: UUID
    invite_id: UUID
    amount: int
    currency: str
    buyer_id: str
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class OrderRefundApplied(_OrderEvent):
    """Orders applied a settled refund: seats voided, registrations cancelled, inventory released."""

    ce_type: ClassVar[str] = "order.refund_applied"

    refund_id: UUID
    amount: int
    currency: str
    refunded_amount: int
    status: str
    voided_seat_ids: list[UUID] = []
    released: int = 0


class _RegistrationEvent(EventData):
    topic: ClassVar[str] = ORDERS_EVENTS

    registration_id: UUID
    order_id: UUID | None = None
    tenant_id: str
    event_id: UUID
    user_id: str
    email: str = ""
    locale: str = "en"
    event_title: str = ""


class RegistrationApproved(_RegistrationEvent):
    """The organizer approved a registration (or it was approved on payment)."""

    ce_type: ClassVar[str] = "registration.approved"


class RegistrationRejected(_RegistrationEvent):
    """The organizer rejected a pending registration."""

    ce_type: ClassVar[str] = "registration.rejected"


class RegistrationCancelled(_RegistrationEvent):
    """A registration was cancelled: a free one at once, or a guest's seat by a settled refund
    (``refund_id``)."""

    ce_type: ClassVar[str] = "registration.cancelled"

    reason: str
    note: str | None = None
    refund_id: UUID | None = None


class EventRescheduled(_RegistrationEvent):
    """The event a registration is for moved: one per holder (distinct e-mail address) of an
    active registration, so that each is told."""

    ce_type: ClassVar[str] = "event.rescheduled"

    previous_starts_at: datetime
    starts_at: datetime


class RegistrationCancellationRequested(_RegistrationEvent):
    """A buyer cancelled a paid seat within the policy: refund ``amount`` for ``seat_id``."""

    ce_type: ClassVar[str] = "registration.cancellation_requested"

    seat_id: UUID
    amount: int
    currency: str
    reason: str = "user"


class InviteRedeemed(_OrderEvent):
    """A gift invite was redeemed: the redeemer holds a registration on that seat."""

    ce_type: ClassVar[str] = "invite.redeemed"

    seat_id: UUID
    registration_id: UUID
    redeemer_id: str
    redeemer_email: str = ""
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class PaymentSucceeded(EventData):
    """The provider confirmed the money for an order (amount checked against the order)."""

    ce_type: ClassVar[str] = "payment.succeeded"
    topic: ClassVar[str] = PAYMENTS_EVENTS

    order_id: UUID
    tenant_id: str
    payment_id: UUID
    provider: str
    payment_method: str
    transaction_id: str
    amount: int
    currency: str
    paid_at: datetime
    transaction_fee: int = 0
    app_fee: int = 0


class PaymentRefundUpdated(EventData):
    """The provider's side of a refund moved (accepted, queued, settled, refused, canceled).

    ``status`` uses the refunds service's vocabulary: ``pending``, ``queued``, ``processing``,
    ``refunded``, ``failed``, ``canceled``. ``failure_code``/``failure_message`` say why a refund
    failed, in words an organizer can act on."""

    ce_type: ClassVar[str] = "payment.refund_updated"
    topic: ClassVar[str] = PAYMENTS_EVENTS

    refund_id: UUID
    order_id: UUID
    tenant_id: str
    provider: str
    status: str
    provider_refund_id: str | None = None
    failure_code: str | None = None
    failure_message: str | None = None
    at: datetime


class _RefundEvent(EventData):
    topic: ClassVar[str] = REFUNDS_EVENTS

    refund_id: UUID
    order_id: UUID
    tenant_id: str
    amount: int
    currency: str
    # who asked, in the registrations' cancellation vocabulary: organizer | admin | user | other
    reason: str
    note: str | None = None
    # 'order': the order's own payment; 'rejected_payment': money the order never kept (a late or
    # duplicate payment), which changes nothing about the order's seats
    kind: str = "order"


class RefundRequested(_RefundEvent):
    """A refund was accepted by the refunds service and must be executed at the provider."""

    ce_type: ClassVar[str] = "refund.requested"

    seat_ids: list[UUID] = []
    # the payment to refund when it is not the order's own (a late or duplicate payment)
    payment_id: UUID | None = None


class RefundCancelRequested(_RefundEvent):
    """The organizer withdrew a refund that had not reached the provider's processing yet; payments
    cancels it if it still can and answers with ``payment.refund_updated``."""

    ce_type: ClassVar[str] = "refund.cancel_requested"


class RefundStatusChanged(_RefundEvent):
    """A refund moved to ``queued``, ``processing``, ``failed`` or ``canceled`` (settlement is
    ``refund.completed``): orders shows ``REFUND_PENDING`` while a refund is in flight."""

    ce_type: ClassVar[str] = "refund.status_changed"

    status: str
    previous_status: str
    failure_code: str | None = None
    failure_message: str | None = None
    # the seats the refund was for (a failed one leaves them as they were), and whom to tell
    seat_ids: list[UUID] = []
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class RefundFailed(_RefundEvent):
    """A refund failed for good: told apart from ``refund.status_changed`` so that whoever only
    cares about failures (the buyer's e-mail) reads nothing else."""

    ce_type: ClassVar[str] = "refund.failed"

    failure_code: str | None = None
    failure_message: str | None = None
    seat_ids: list[UUID] = []
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""


class RefundCompleted(_RefundEvent):
    """The provider settled a refund: the money went back to the buyer."""

    ce_type: ClassVar[str] = "refund.completed"

    voided_seat_ids: list[UUID] = []
    fully_refunded: bool = False
    refunded_total: int = 0
    refunded_at: datetime
    buyer_email: str = ""
    buyer_locale: str = "en"
    event_title: str = ""
