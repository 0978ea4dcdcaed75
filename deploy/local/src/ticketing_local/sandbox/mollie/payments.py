"""Payments (B1): create, get, list, cancel, expiry of unpaid payments and the status changes the
buyer causes (checkout page, control API), each final one calling the webhook (B2)."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

from ..common import ControlError
from .config import LOGGER_NAME
from .errors import ApiError, not_found, unprocessable
from .state import Caller, Payment, Refund
from .validation import (
    amount_field,
    choice_field,
    metadata_field,
    reject_unknown,
    string_field,
    url_field,
)
from .webhooks import Webhooks
from .wire import Json, iso, link, money, new_id, now

log = logging.getLogger(LOGGER_NAME)

DOCS = "https://docs.mollie.com/reference/v2/"
#: every body parameter of Create payment (``molnew``'s ``PaymentRequest``); others → 422
PAYMENT_PARAMETERS = frozenset(
    {
        "description",
        "amount",
        "redirectUrl",
        "cancelUrl",
        "webhookUrl",
        "lines",
        "billingAddress",
        "shippingAddress",
        "locale",
        "method",
        "issuer",
        "restrictPaymentMethodsToCountry",
        "metadata",
        "captureMode",
        "captureDelay",
        "applicationFee",
        "routing",
        "sequenceType",
        "mandateId",
        "customerId",
        "profileId",
        "dueDate",
        "storeCredentials",
        "testmode",
        "applePayPaymentToken",
        "company",
        "cardToken",
        "googlePayPaymentToken",
        "voucherNumber",
        "voucherPin",
        "consumerDateOfBirth",
        "extraMerchantData",
        "sessionId",
        "digitalGoods",
        "customerReference",
        "terminalId",
    }
)
#: which statuses each status can be reached from (B1)
PAYMENT_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("open",),
    "authorized": ("open", "pending"),
    "paid": ("open", "pending", "authorized"),
    "failed": ("open", "pending"),
    "canceled": ("open", "pending", "authorized"),
    "expired": ("open", "pending", "authorized"),
}
#: statuses that call the webhook (never ``open``/``pending``)
WEBHOOK_STATUSES = frozenset({"authorized", "paid", "failed", "canceled", "expired"})
CANCELABLE_STATUSES = frozenset({"open", "authorized"})
UNPAID_STATUSES = frozenset({"open", "pending"})
#: refunds that count against ``amountRemaining``
ACTIVE_REFUND_STATUSES = frozenset({"queued", "pending", "processing", "refunded"})
MAX_LIST_LIMIT = 250
DEFAULT_LIST_LIMIT = 50

#: ``details`` of a paid test payment, per method
TEST_DETAILS: dict[str, Json] = {
    "ideal": {
        "consumerName": "T. TEST",
        "consumerAccount": "NL72RABO0110438885",
        "consumerBic": "RABONL2U",
    },
    "creditcard": {
        "cardNumber": "6787",
        "cardHolder": "T. TEST",
        "cardAudience": "consumer",
        "cardLabel": "Mastercard",
        "cardFunding": "credit",
        "cardCountryCode": "NL",
        "cardSecurity": "normal",
        "feeRegion": "intra-eu",
    },
}


def paginate(
    items: list[str], query: dict[str, str]
) -> tuple[list[str], str | None, str | None, int]:
    """Mollie's cursor pagination over ids (newest first): ``from`` (inclusive) and ``limit``.

    Returns the page, the ``from`` of the previous and of the next page, and the limit.
    """
    raw_limit = query.get("limit") or str(DEFAULT_LIST_LIMIT)
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ApiError(400, f"The limit must be between 1 and {MAX_LIST_LIMIT}", field="limit")
    start = 0
    cursor = query.get("from")
    if cursor:
        if cursor not in items:
            return [], None, None, limit
        start = items.index(cursor)
    page = items[start : start + limit]
    previous = items[max(0, start - limit)] if start > 0 else None
    following = items[start + limit] if start + limit < len(items) else None
    return page, previous, following, limit


def list_links(base: str, path: str, doc: str, page: tuple[str | None, str | None, int]) -> Json:
    previous, following, limit = page

    def href(cursor: str | None) -> str:
        query = {"from": cursor, "limit": limit} if cursor else {"limit": limit}
        return f"{base}{path}?{urlencode(query)}"

    return {
        "self": link(href(None)),
        "previous": link(href(previous)) if previous else None,
        "next": link(href(following)) if following else None,
        "documentation": link(DOCS + doc, "text/html"),
    }


class Payments(Webhooks):
    """The payment layer of :class:`~.sandbox.MollieSandbox`."""

    _expiry_started = False

    # ---- lookups ---------------------------------------------------------------------------

    def find_payment(self, caller: Caller, payment_id: str) -> Payment:
        """The caller's payment (its own mode only), else ``404``."""
        payment = self._payments.get(payment_id)
        if payment is None or payment.mode != caller.mode:
            raise not_found("payment", payment_id)
        self._refresh(payment)
        return payment

    def payment_refunds(self, payment: Payment, *, canceled: bool = False) -> list[Refund]:
        refunds = [self._refunds[rid] for rid in payment.refund_ids]
        return [r for r in refunds if canceled or r.status != "canceled"]

    def amount_refunded(self, payment: Payment) -> Decimal:
        refunds = self.payment_refunds(payment)
        return sum((r.amount for r in refunds if r.status in ACTIVE_REFUND_STATUSES), Decimal(0))

    # ---- views -----------------------------------------------------------------------------

    def payment_view(self, payment: Payment, base: str, *, doc: str = "get-payment") -> Json:
        """The payment object: fields appear only once they apply (``paidAt`` once paid,
        ``amountRefunded``/``amountRemaining``/``settlementAmount`` once refundable,
        ``_links.checkout`` while open, ``_links.refunds`` once there are refunds)."""
        p = payment
        view: Json = {
            "resource": "payment",
            "id": p.id,
            "mode": p.mode,
            "createdAt": iso(p.created_at),
            "amount": money(p.currency, p.amount),
            "description": p.description,
            "method": p.method,
            "metadata": p.metadata,
            "status": p.status,
            "isCancelable": p.status in CANCELABLE_STATUSES,
        }
        if p.status in UNPAID_STATUSES:
            view["expiresAt"] = iso(p.expires_at)
        for key, moment in (
            ("authorizedAt", p.authorized_at),
            ("paidAt", p.paid_at),
            ("canceledAt", p.canceled_at),
            ("expiredAt", p.expired_at),
            ("failedAt", p.failed_at),
        ):
            if moment is not None:
                view[key] = iso(moment)
        if p.status == "paid":
            refunded = self.amount_refunded(p)
            view["amountRefunded"] = money(p.currency, refunded)
            view["amountRemaining"] = money(p.currency, p.amount - refunded)
            view["settlementAmount"] = money(p.currency, p.amount)
        view["details"] = p.details
        view["profileId"] = self.config.profile_id
        view["sequenceType"] = p.sequence_type
        for key, value in (
            ("redirectUrl", p.redirect_url),
            ("cancelUrl", p.cancel_url),
            ("webhookUrl", p.webhook_url),
            ("locale", p.locale),
            ("restrictPaymentMethodsToCountry", p.restrict_country),
            ("countryCode", p.country_code),
        ):
            if value is not None:
                view[key] = value
        links: Json = {"self": link(f"{base}/v2/payments/{p.id}")}
        if p.status == "open" and p.sequence_type != "recurring":
            links["checkout"] = link(f"{base}/checkout/{p.id}", "text/html")
            if p.mode == "test":  # Mollie's test-mode page to pick the outcome
                links["changePaymentState"] = link(f"{base}/checkout/{p.id}", "text/html")
        # Mollie's dashboard is a web app; the sandbox's nearest thing is its raw state
        links["dashboard"] = link(f"{base}/sandbox/payments/{p.id}", "application/json")
        if self.payment_refunds(p):
            links["refunds"] = link(f"{base}/v2/payments/{p.id}/refunds")
        links["documentation"] = link(DOCS + "payments-api/" + doc, "text/html")
        view["_links"] = links
        return view

    # ---- provider API ----------------------------------------------------------------------

    def create_payment(self, caller: Caller, params: Json) -> Json:
        reject_unknown(params, PAYMENT_PARAMETERS)
        currency, value = amount_field(
            params, required_detail="The amount is required for payments"
        )
        if value <= 0:
            raise unprocessable("The amount is lower than the minimum", "amount")
        description = string_field(params, "description", required=True, label="description")
        sequence_type = choice_field(
            params, "sequenceType", ("oneoff", "first", "recurring"), "oneoff"
        )
        redirect_url = url_field(
            params, "redirectUrl", required=sequence_type != "recurring", label="redirect URL"
        )
        cancel_url = url_field(params, "cancelUrl", required=False, label="cancel URL")
        webhook_url = url_field(params, "webhookUrl", required=False, label="webhook URL")
        metadata = metadata_field(params)
        method = params.get("method")
        if method is not None and not (
            isinstance(method, str)
            or (isinstance(method, list) and all(isinstance(m, str) for m in method))
        ):
            raise unprocessable("The method is invalid", "method")
        locale = string_field(params, "locale", required=False, label="locale")
        country = string_field(
            params, "restrictPaymentMethodsToCountry", required=False, label="country"
        )
        capture_mode = params.get("captureMode")
        if capture_mode not in (None, "automatic", "manual"):
            raise unprocessable("The capture mode is invalid", "captureMode")
        assert description is not None
        created = now()
        payment = Payment(
            id=new_id("tr_"),
            mode=caller.mode,
            created_at=created,
            currency=currency,
            amount=value,
            description=description[:255],
            redirect_url=redirect_url,
            cancel_url=cancel_url,
            webhook_url=webhook_url,
            metadata=metadata,
            method=method if isinstance(method, str) else None,
            locale=locale,
            sequence_type=sequence_type,
            restrict_country=country,
            capture_mode=capture_mode,
            expires_at=created + timedelta(seconds=self.config.payment_ttl_s),
        )
        self._payments[payment.id] = payment
        self._open[payment.id] = payment
        self._start_expiry()
        log.info("payment %s created (%s %s, %s)", payment.id, currency, value, caller.mode)
        return self.payment_view(payment, caller.base, doc="create-payment")

    def get_payment(self, caller: Caller, payment_id: str, query: dict[str, str]) -> Json:
        payment = self.find_payment(caller, payment_id)
        view = self.payment_view(payment, caller.base)
        if "refunds" in query.get("embed", "").split(","):
            view["_embedded"] = {
                "refunds": [self.refund_view(r, caller.base) for r in self.payment_refunds(payment)]
            }
        return view

    def list_payments(self, caller: Caller, query: dict[str, str]) -> Json:
        ids = [p.id for p in reversed(self._payments.values()) if p.mode == caller.mode]
        page, previous, following, limit = paginate(ids, query)
        payments = [self.payment_view(self.find_payment(caller, pid), caller.base) for pid in page]
        return {
            "count": len(payments),
            "_embedded": {"payments": payments},
            "_links": list_links(
                caller.base,
                "/v2/payments",
                "payments-api/list-payments",
                (previous, following, limit),
            ),
        }

    def cancel_payment(self, caller: Caller, payment_id: str) -> Json:
        """``DELETE /v2/payments/{id}``: only while ``isCancelable``; calls the webhook too."""
        payment = self.find_payment(caller, payment_id)
        if payment.status not in CANCELABLE_STATUSES:
            raise unprocessable("The payment cannot be cancelled")
        self._apply_status(payment, "canceled")
        return self.payment_view(payment, caller.base, doc="cancel-payment")

    # ---- status changes --------------------------------------------------------------------

    def move_payment(
        self, payment: Payment, status: str, *, method: str | None = None, webhook: bool = True
    ) -> None:
        """Control API / checkout: move ``payment`` to ``status`` if B1 allows it (else 409).
        ``webhook=False`` plays a webhook that never arrives (the merchant must find out)."""
        self._refresh(payment)
        allowed = PAYMENT_TRANSITIONS.get(status)
        if allowed is None:
            raise ControlError(400, "INVALID_STATUS", f"unknown payment status {status!r}")
        if payment.status not in allowed:
            raise ControlError(
                409,
                "INVALID_STATE",
                f"payment {payment.id} is {payment.status}; it cannot become {status}",
            )
        self._apply_status(payment, status, method=method, webhook=webhook)

    def _apply_status(
        self, payment: Payment, status: str, *, method: str | None = None, webhook: bool = True
    ) -> None:
        moment = now()
        payment.status = status
        if status not in UNPAID_STATUSES:
            self._open.pop(payment.id, None)
        if status in ("paid", "authorized"):
            if method is not None:
                payment.method = method
            if payment.method is None:
                payment.method = "ideal" if payment.currency == "EUR" else "creditcard"
            if payment.details is None:
                payment.details = dict(TEST_DETAILS.get(payment.method, {})) or None
            payment.country_code = payment.country_code or "NL"
        if status == "paid":
            payment.paid_at = moment
        elif status == "authorized":
            payment.authorized_at = moment
        elif status == "canceled":
            payment.canceled_at = moment
        elif status == "expired":
            payment.expired_at = moment
        elif status == "failed":
            payment.failed_at = moment
        log.info("payment %s is %s", payment.id, status)
        if status in WEBHOOK_STATUSES and webhook:
            self.fire(payment, f"payment.{status}")

    # ---- expiry ----------------------------------------------------------------------------

    def _refresh(self, payment: Payment) -> None:
        """Expire an unpaid payment whose ``expiresAt`` has passed (and call its webhook)."""
        if payment.status in UNPAID_STATUSES and now() >= payment.expires_at:
            self._apply_status(payment, "expired")

    def _start_expiry(self) -> None:
        if not self._expiry_started:
            self._expiry_started = True
            self._spawn(self._expire_loop(), name="mollie-payment-expiry")

    async def _expire_loop(self) -> None:
        """Expire open payments on time even when nobody looks at them (the webhook fires)."""
        interval = min(1.0, max(0.05, self.config.payment_ttl_s / 10))
        while True:
            await asyncio.sleep(interval)
            async with self.lock:
                for payment in list(self._open.values()):
                    self._refresh(payment)

    # ---- implemented by the refund layer ---------------------------------------------------

    def refund_view(self, refund: Refund, base: str, *, doc: str = "get-payment-refund") -> Json:
        raise NotImplementedError
