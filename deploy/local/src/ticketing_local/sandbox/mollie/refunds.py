"""Refunds (B4): create with Mollie's rules, get, list, cancel, and the status walk
``queued → pending → processing → refunded|failed`` that re-calls the *payment's* webhook (B2)."""

from __future__ import annotations

import asyncio
import logging

from ..common import ControlError
from .config import LOGGER_NAME
from .errors import (
    CANNOT_REFUND,
    DUPLICATE_REFUND,
    ApiError,
    not_found,
    unprocessable,
)
from .payments import DOCS, Payments, list_links, paginate
from .state import Caller, Payment, Refund
from .validation import amount_field, metadata_field, reject_unknown, string_field
from .wire import Json, iso, link, money, new_id, now

log = logging.getLogger(LOGGER_NAME)

REFUND_PARAMETERS = frozenset(
    {"amount", "description", "metadata", "testmode", "reverseRouting", "routingReversals"}
)
REFUND_DESCRIPTION_MAX = 140
CANCELABLE_REFUND_STATUSES = frozenset({"queued", "pending"})
#: which statuses each refund status can be reached from (``POST /sandbox/refunds/{id}/advance``)
REFUND_TRANSITIONS: dict[str, tuple[str, ...]] = {
    "pending": ("queued",),
    "processing": ("pending",),
    "refunded": ("processing",),
    "failed": ("processing",),
    "canceled": ("queued", "pending"),
}
#: refund statuses that re-call the payment's webhook; ``canceled`` only when the control API
#: plays a cancel from the dashboard — a cancel through the API is the merchant's own doing
REFUND_WEBHOOK_STATUSES = frozenset({"processing", "refunded", "failed", "canceled"})
#: refunds that count for the duplicate check
LIVE_REFUND_STATUSES = frozenset({"queued", "pending", "processing", "refunded"})


class Refunds(Payments):
    """The refund layer of :class:`~.sandbox.MollieSandbox`."""

    def find_refund(self, caller: Caller, payment: Payment, refund_id: str) -> Refund:
        """A refund of ``payment``; canceled ones are gone (``404``) like at Mollie."""
        refund = self._refunds.get(refund_id)
        if (
            refund is None
            or refund.payment_id != payment.id
            or refund.mode != caller.mode
            or refund.status == "canceled"
        ):
            raise not_found("refund", refund_id)
        return refund

    def refund_view(self, refund: Refund, base: str, *, doc: str = "get-payment-refund") -> Json:
        """The refund object, with every key ``mollie-api-py`` requires (``mode``, nullable
        ``description``/``metadata``, ``_links.self/payment/documentation``)."""
        r = refund
        payment_href = f"{base}/v2/payments/{r.payment_id}"
        return {
            "resource": "refund",
            "id": r.id,
            "mode": r.mode,
            "amount": money(r.currency, r.amount),
            # what the refund costs the balance: negative, unknown while queued
            "settlementAmount": None if r.status == "queued" else money(r.currency, -r.amount),
            "description": r.description,
            "metadata": r.metadata,
            "status": r.status,
            "createdAt": iso(r.created_at),
            "paymentId": r.payment_id,
            "_links": {
                "self": link(f"{payment_href}/refunds/{r.id}"),
                "payment": link(payment_href),
                "documentation": link(DOCS + "refunds-api/" + doc, "text/html"),
            },
        }

    # ---- provider API ----------------------------------------------------------------------

    def create_refund(self, caller: Caller, payment_id: str, params: Json) -> Json:
        """Checks, in order: the payment (404), the body (422), the payment is ``paid`` (422),
        the same amount within the duplicate window (409), the amount left (422)."""
        payment = self.find_payment(caller, payment_id)
        reject_unknown(params, REFUND_PARAMETERS)
        currency, value = amount_field(params, required_detail="The amount is required for refunds")
        if currency != payment.currency:
            raise unprocessable(
                "The currency of the refund must be the currency of the payment",
                "amount.currency",
            )
        description = string_field(params, "description", required=False, label="description")
        if description is not None:
            description = description[:REFUND_DESCRIPTION_MAX]
        metadata = metadata_field(params)
        if payment.status != "paid" or value <= 0:
            raise unprocessable(CANNOT_REFUND, "amount.value")
        created = now()
        window = self.config.duplicate_refund_window_s
        for other in self.payment_refunds(payment):
            if (
                other.status in LIVE_REFUND_STATUSES
                and other.amount == value
                and (created - other.created_at).total_seconds() < window
            ):
                raise ApiError(409, DUPLICATE_REFUND)
        if self.amount_refunded(payment) + value > payment.amount:
            raise unprocessable(CANNOT_REFUND, "amount.value")
        refund = Refund(
            id=new_id("re_"),
            payment_id=payment.id,
            mode=payment.mode,
            currency=currency,
            amount=value,
            description=description,
            metadata=metadata,
            created_at=created,
            status="queued" if self.balance_low else "pending",
        )
        self._refunds[refund.id] = refund
        payment.refund_ids.append(refund.id)
        log.info(
            "refund %s of %s created (%s %s, %s)",
            refund.id,
            payment.id,
            currency,
            value,
            refund.status,
        )
        if refund.status == "pending":
            self._start_walk(refund)
        return self.refund_view(refund, caller.base, doc="create-payment-refund")

    def get_refund(
        self, caller: Caller, payment_id: str, refund_id: str, query: dict[str, str]
    ) -> Json:
        payment = self.find_payment(caller, payment_id)
        refund = self.find_refund(caller, payment, refund_id)
        view = self.refund_view(refund, caller.base)
        if "payment" in query.get("embed", "").split(","):
            view["_embedded"] = {"payment": self.payment_view(payment, caller.base)}
        return view

    def list_refunds(self, caller: Caller, payment_id: str, query: dict[str, str]) -> Json:
        payment = self.find_payment(caller, payment_id)
        ids = [r.id for r in reversed(self.payment_refunds(payment))]
        path = f"/v2/payments/{payment.id}/refunds"
        return self._refund_list(caller, ids, query, path, "refunds-api/list-payment-refunds")

    def list_all_refunds(self, caller: Caller, query: dict[str, str]) -> Json:
        ids = [
            r.id
            for r in reversed(self._refunds.values())
            if r.mode == caller.mode and r.status != "canceled"
        ]
        return self._refund_list(caller, ids, query, "/v2/refunds", "refunds-api/list-refunds")

    def _refund_list(
        self, caller: Caller, ids: list[str], query: dict[str, str], path: str, doc: str
    ) -> Json:
        page, previous, following, limit = paginate(ids, query)
        refunds = [self.refund_view(self._refunds[rid], caller.base) for rid in page]
        return {
            "count": len(refunds),
            "_embedded": {"refunds": refunds},
            "_links": list_links(caller.base, path, doc, (previous, following, limit)),
        }

    def cancel_refund(self, caller: Caller, payment_id: str, refund_id: str) -> None:
        """``DELETE``: only ``queued``/``pending`` refunds (→ 204, then 404 on GET).

        Any later status is refused with ``422`` — Mollie answers state refusals of well-formed
        requests (a payment that cannot be canceled, an amount that cannot be refunded) with
        422 and keeps 409 for duplicates and idempotency conflicts.
        """
        payment = self.find_payment(caller, payment_id)
        refund = self.find_refund(caller, payment, refund_id)
        if refund.status not in CANCELABLE_REFUND_STATUSES:
            raise unprocessable(f"The refund cannot be canceled, it is {refund.status}")
        self._set_refund_status(refund, "canceled", notify=False)

    # ---- status walk -----------------------------------------------------------------------

    def _set_refund_status(self, refund: Refund, status: str, *, notify: bool) -> None:
        refund.status = status
        log.info("refund %s is %s", refund.id, status)
        if notify and status in REFUND_WEBHOOK_STATUSES:
            self.fire(self._payments[refund.payment_id], f"refund.{status}", refund.id)

    def advance_refund(self, refund: Refund, status: str) -> None:
        """Control API: move a refund along :data:`REFUND_TRANSITIONS` (else 409). The refund
        is then under the caller's control: automatic settlement leaves it alone, so a test can
        script ``queued → pending → processing → failed`` without racing it."""
        allowed = REFUND_TRANSITIONS.get(status)
        if allowed is None:
            raise ControlError(
                400, "INVALID_STATUS", f"status must be one of {sorted(REFUND_TRANSITIONS)}"
            )
        if refund.status not in allowed:
            raise ControlError(
                409,
                "INVALID_STATE",
                f"refund {refund.id} is {refund.status}; it cannot become {status}",
            )
        refund.manual = True
        self._set_refund_status(refund, status, notify=True)

    def set_balance_low(self, low: bool) -> None:
        """Low: new refunds start ``queued``. Back to normal: queued refunds become ``pending``
        (no webhook: Mollie calls it from ``processing`` on) and walk on."""
        self.balance_low = low
        if not low:
            for refund in self._refunds.values():
                if refund.status == "queued":
                    self._set_refund_status(refund, "pending", notify=False)
                    self._start_walk(refund)

    def _start_walk(self, refund: Refund) -> None:
        if self.config.auto_settle_ms >= 0 and not refund.walking:
            refund.walking = True
            self._spawn(self._walk(refund), name=f"mollie-refund-{refund.id}")

    async def _walk(self, refund: Refund) -> None:
        """``pending → processing → refunded``, one step per ``auto_settle_ms``; stops as soon as
        the refund is elsewhere (canceled) or the control API has taken it over."""
        step_s = self.config.auto_settle_ms / 1000
        try:
            while True:
                await asyncio.sleep(step_s)
                async with self.lock:
                    if refund.manual:
                        return
                    if refund.status == "pending":
                        self._set_refund_status(refund, "processing", notify=True)
                    elif refund.status == "processing":
                        self._set_refund_status(refund, "refunded", notify=True)
                        return
                    else:
                        return
        finally:
            refund.walking = False
