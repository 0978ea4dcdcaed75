"""Payments domain: attempt states, payment methods, fees, provider order numbers. No I/O.

Payment attempt::

    CREATED ──provider confirms, amount matches──► SUCCEEDED
       │  └──amount or currency differ──► REJECTED (alerted; never paid)
       └──order cancelled/expired──► CLOSED (provider order closed: a late scan cannot pay)
"""

from __future__ import annotations

from enum import StrEnum
from uuid import UUID

from .errors import IllegalPaymentTransition


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


def transition(current: PaymentStatus, target: PaymentStatus) -> PaymentStatus:
    if target not in TRANSITIONS[current]:
        raise IllegalPaymentTransition(f"payment cannot go from {current} to {target}")
    return target


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


# ---------------------------------------------------------------------------------------- refunds
# WeChat Pay refund status (API object ``status``, notification ``refund_status``) → ours
WECHAT_REFUND_STATUS = {
    "PROCESSING": "processing",
    "SUCCESS": "refunded",
    "ABNORMAL": "failed",
    "CLOSED": "failed",
}
REFUND_OPEN = ["pending", "queued", "processing"]

_REFUND_ADVICE = {
    "NOT_ENOUGH": "The merchant balance is too low for this refund. Top up the WeChat Pay "
    "balance (or wait for settlement), then request the refund again.",
    "USER_ACCOUNT_ABNORMAL": "The buyer's WeChat account cannot receive money. Refund the buyer "
    "another way, or use WeChat Pay's abnormal-refund flow in the merchant portal.",
    "ABNORMAL": "The buyer's card or account could not take the money back. Re-route the refund "
    "in the WeChat Pay merchant portal (abnormal refund) or refund the buyer offline.",
    "CLOSED": "WeChat Pay closed the refund without paying it. Request a new refund.",
    "no_payment": "No paid transaction was found for this order at the provider.",
    # Mollie (its errors carry words, mapped to these codes by the adapter)
    "amount_not_refundable": "Mollie will not refund this amount: it is more than what remains "
    "refundable on the payment, or the payment cannot be refunded. Check the payment in the "
    "Mollie dashboard.",
    "duplicate_refund": "Mollie refuses a second refund of the same amount on one payment within "
    "an hour. Request it again after an hour, or for a different amount.",
    "mollie_failed": "Mollie could not pay the refund out (the buyer's bank refused it) and the "
    "money went back to your Mollie balance. Refund the buyer another way, or request a new "
    "refund.",
    "unauthorized": "The provider refused our API credentials. Check the payments service's "
    "provider key configuration, then request the refund again.",
}

PROVIDER_NAMES = {"wechatpay": "WeChat Pay", "mollie": "Mollie"}


def refund_failure_message(code: str, provider_message: str = "", provider: str = "") -> str:
    """What an organizer should do about a failed refund, in words."""
    advice = _REFUND_ADVICE.get(code)
    if advice:
        return advice
    detail = f": {provider_message}" if provider_message else ""
    name = PROVIDER_NAMES.get(provider, "The payment provider")
    return f"{name} refused the refund ({code}){detail}. Check the order at the provider."


# Mollie's refund statuses are ours, one to one
MOLLIE_REFUND_STATUS = {
    s: s for s in ("pending", "queued", "processing", "refunded", "failed", "canceled")
}


def provider_for_currency(currency: str) -> str:
    """WeChat Pay (mainland direct merchant) settles CNY only; every other currency is Mollie's."""
    return "wechatpay" if currency.strip().upper() == "CNY" else "mollie"


# ------------------------------------------------------------------------------ personal data
#: what the providers tell us about the payer that we have no use for, wherever it appears in
#: what we keep of their answers and notifications: WeChat's openid, the payer's device and IP,
#: the account a refund went back to; Mollie's consumer name, account (IBAN) and BIC, the card
#: holder and number, billing addresses
PERSONAL_FIELDS = frozenset(
    {
        "openid",
        "sub_openid",
        "sp_openid",
        "payer_client_ip",
        "device_id",
        "user_received_account",
        "consumerName",
        "consumerAccount",
        "consumerBic",
        "cardHolder",
        "cardNumber",
        "cardFingerprint",
        "billingEmail",
        "billingAddress",
        "shippingAddress",
        "bankAccount",
        "bankBic",
        "iban",
        "bic",
    }
)
REDACTED = "[redacted]"


def redact(payload: object) -> object:
    """``payload`` with every personal field's value replaced (at any depth); the rest, which
    tells what happened (statuses, amounts, ids), is kept as evidence of the provider's word."""
    if isinstance(payload, dict):
        return {
            k: (REDACTED if k in PERSONAL_FIELDS and v is not None else redact(v))
            for k, v in payload.items()
        }
    if isinstance(payload, list):
        return [redact(v) for v in payload]
    return payload
