"""Event payloads and topic names: the only types that cross service lines.

One pydantic class per ``ce_type``, each with a schema version. A consumer looks a record's
``ce_type`` up in ``EVENT_TYPES`` and validates its ``data`` with that class.
"""

from .base import EVENT_TYPES, EventData, event_class
from .events import (
    EventRescheduled,
    InviteRedeemed,
    OrderCancelled,
    OrderCreated,
    OrderExpired,
    OrderPaid,
    OrderPaymentRejected,
    OrderRefundApplied,
    PaymentRefundUpdated,
    PaymentSucceeded,
    RefundCancelRequested,
    RefundCompleted,
    RefundFailed,
    RefundRequested,
    RefundStatusChanged,
    RegistrationApproved,
    RegistrationCancellationRequested,
    RegistrationCancelled,
    RegistrationRejected,
    SeatInfo,
    SeatReturnRequested,
)
from .topics import ALL_TOPICS, ORDERS_EVENTS, PAYMENTS_EVENTS, REFUNDS_EVENTS, dlq_topic

__all__ = [
    "ALL_TOPICS",
    "EVENT_TYPES",
    "ORDERS_EVENTS",
    "PAYMENTS_EVENTS",
    "REFUNDS_EVENTS",
    "EventData",
    "EventRescheduled",
    "InviteRedeemed",
    "OrderCancelled",
    "OrderCreated",
    "OrderExpired",
    "OrderPaid",
    "OrderPaymentRejected",
    "OrderRefundApplied",
    "PaymentRefundUpdated",
    "PaymentSucceeded",
    "RefundCancelRequested",
    "RefundCompleted",
    "RefundFailed",
    "RefundRequested",
    "RefundStatusChanged",
    "RegistrationApproved",
    "RegistrationCancellationRequested",
    "RegistrationCancelled",
    "RegistrationRejected",
    "SeatInfo",
    "SeatReturnRequested",
    "dlq_topic",
    "event_class",
]
