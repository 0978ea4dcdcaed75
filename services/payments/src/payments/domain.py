"""Payments domain: attempt states, payment methods, fees, provider order numbers. No I/O.

Payment attempt::

    CREATED ──provider confirms, amount matches──► SUCCEEDED
       │  └──amount or currency differ──► REJECTED (alerted; never paid)
       └──order cancelled/expired──► CLOSED (provider order closed: a late scan cannot pay)
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from ticketing_shared.errors import Conflict, Unprocessable


class PaymentStatus(StrEnum):
    CREATED = "CREATED"
    SUCCEEDED = "SUCCEEDED"
    CLOSED = "CLOSED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


class PaymentMethod(StrEnum):
    NATIVE = "NATIVE"
    JSAPI = "JSAPI"
    REDIRECT = "REDIRECT"


TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.CREATED: frozenset(
        {
            PaymentStatus.SUCCEEDED,
            PaymentStatus.CLOSED,
            PaymentStatus.FAILED,
            PaymentStatus.REJECTED,
        }
    ),
    # a payment WeChat reports after we closed the order (a race at the provider) is still money in
    PaymentStatus.CLOSED: frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.REJECTED}),
    PaymentStatus.SUCCEEDED: frozenset(),
    PaymentStatus.FAILED: frozenset({PaymentStatus.SUCCEEDED}),
    PaymentStatus.REJECTED: frozenset(),
}


class IllegalPaymentTransition(Conflict):
    code, title = "illegal_transition", "Illegal payment state transition"


def transition(current: PaymentStatus, target: PaymentStatus) -> PaymentStatus:
    if target not in TRANSITIONS[current]:
        raise IllegalPaymentTransition(f"payment cannot go from {current} to {target}")
    return target


class OrderNotPayable(Conflict):
    code, title = "order_not_payable", "This order cannot be paid"


class OpenIdRequired(Unprocessable):
    code, title = "openid_required", "A WeChat openid is required to pay inside WeChat"


def wechat_method(user_agent: str | None) -> PaymentMethod:
    """Inside the WeChat browser (``MicroMessenger``) JSAPI, anywhere else Native (QR)."""
    return (
        PaymentMethod.JSAPI
        if "micromessenger" in (user_agent or "").lower()
        else PaymentMethod.NATIVE
    )


def out_trade_no(order_id: UUID) -> str:
    """WeChat's merchant order number for an order: its id as 32 hex digits."""
    return order_id.hex


def fee(amount: int, basis_points: int) -> int:
    """A fee in minor units, rounded half up."""
    return (amount * basis_points + 5000) // 10000
