"""Every problem the refunds service answers with, one class per ``code`` (RFC 9457 bodies are
built from them by ``ticketing_shared.errors``)."""

from __future__ import annotations

from ticketing_shared.errors import Conflict, DomainError, Forbidden, Unprocessable


class OrderNotRefundable(Conflict):
    code, title = "order_not_refundable", "This order cannot be refunded"


class OrderNotPaid(OrderNotRefundable):
    """The order is not paid (as far as refunds has heard): maybe not yet."""


class OverRefund(Conflict):
    code, title = "over_refund", "The refund exceeds what is left to refund"


class SeatAlreadyRefunded(Conflict):
    code, title = "seat_already_refunded", "A seat is already part of another refund"


class UnknownSeat(Unprocessable):
    code, title = "unknown_seat", "A seat does not belong to this order"


class NoItems(Unprocessable):
    code, title = "no_items", "A refund by seats names no seat"


class DuplicateSeat(Unprocessable):
    code, title = "duplicate_seat", "A seat is listed twice"


class InvalidAmount(Unprocessable):
    code, title = "invalid_amount", "The refund amount must be greater than 0"


class RefundNotCancelable(Conflict):
    code, title = "refund_not_cancelable", "This refund can no longer be canceled"


class StaffOnly(Forbidden):
    """A member of the tenant (or the buyer, where staff is required): refunds are the tenant's
    owners' and admins' to see and make."""

    code, title = "forbidden", "Refunds need the tenant's owner or admin role"


class OrderUnknown(DomainError):
    """An event about an order this service has not heard of yet: retried, then dead-lettered."""

    status, code, title = 409, "order_unknown", "Order not in the read model yet"
