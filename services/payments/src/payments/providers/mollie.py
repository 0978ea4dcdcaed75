"""Mollie API v2 client (payments and refunds), on httpx.

- Amounts: we keep integers in minor units; Mollie wants ``{"currency", "value"}`` with ``value``
  a string carrying exactly the currency's decimals (``"10.00"`` EUR, ``"1000"`` JPY).
- Every POST carries an explicit ``Idempotency-Key`` derived from our own ids (the payment
  attempt id for a payment, the refund id for a refund), so a retry after a crash or a timeout
  replays Mollie's first answer instead of acting twice. Mollie forgets keys after an hour; the
  refund path therefore looks the refund up by its metadata before any retry.
- Errors are HAL bodies with a numeric ``status``: 429 and 5xx (and a 409 "request with this
  Idempotency-Key is already being processed") are retried with the same key, no earlier than
  a ``Retry-After`` says; other 4xx never.
- Webhooks carry only ``id=tr_…``: the truth is always fetched with :meth:`get_payment` and
  :meth:`list_refunds`, never read from the request.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx

from .base import ProviderClient, ProviderError

__all__ = ["MollieClient", "MollieConfig", "MollieError", "from_value", "to_value"]

# a payment's id (``tr_7UhSN1zuXS``), whole: fullmatch (``$`` would let a trailing newline in)
PAYMENT_ID = re.compile(r"tr_[A-Za-z0-9]{4,64}")
# currencies Mollie counts in whole units; every other currency Mollie takes has 2 decimals
ZERO_DECIMALS = frozenset({"JPY", "ISK", "KRW", "CLP", "VND"})


def decimals(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMALS else 2


def to_value(amount: int, currency: str) -> str:
    """Minor units → Mollie's value string (``1050, "EUR"`` → ``"10.50"``)."""
    places = decimals(currency)
    if places == 0:
        return str(amount)
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 10**places)
    return f"{sign}{whole}.{cents:0{places}d}"


def from_value(value: str, currency: str) -> int:
    """Mollie's value string → minor units; refuses anything not exact."""
    try:
        amount = Decimal(value) * (10 ** decimals(currency))
    except (InvalidOperation, TypeError) as exc:
        raise ValueError(f"not an amount: {value!r}") from exc
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} has more decimals than {currency} allows")
    return int(amount)


class MollieError(ProviderError):
    """Mollie answered with an error body (or could not be reached: ``status`` 0)."""

    provider = "mollie"

    def __init__(
        self, code: str, message: str, *, status: int = 0, field: str | None = None
    ) -> None:
        super().__init__(code, message, status=status, detail={"field": field} if field else None)
        self.field = field

    @property
    def retryable(self) -> bool:
        return super().retryable or self.code == "idempotency_key_in_flight"


def _code(status: int, detail: str) -> str:
    """A stable code for a Mollie error (its bodies carry a status and words, not codes)."""
    text = detail.lower()
    if status == 409 and "idempotency" in text:
        return "idempotency_key_in_flight"
    if status == 409 and "duplicate" in text:
        return "duplicate_refund"
    if status == 422 and "cannot be refunded" in text:
        return "amount_not_refundable"
    if status == 401:
        return "unauthorized"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "provider_error"
    return f"http_{status}"


@dataclass(frozen=True)
class MollieConfig:
    base_url: str
    api_key: str
    #: where Mollie calls us (``…/v1/webhooks/mollie``)
    webhook_url: str
    #: where the buyer returns after checkout; ``{order_id}`` is replaced
    redirect_url: str

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(live|test)_\w+", self.api_key):
            raise ValueError("a Mollie API key starts with live_ or test_")


class MollieClient(ProviderClient):
    def __init__(
        self,
        config: MollieConfig,
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        budget_s: float = 5.0,
    ) -> None:
        super().__init__(http, max_attempts=max_attempts, backoff_s=backoff_s, budget_s=budget_s)
        self.config = config
        self.base = config.base_url.rstrip("/") + "/v2"

    # ------------------------------------------------------------------------------ transport
    async def _request(
        self,
        method: str,
        path: str,
        *,
        payload: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any] | None:
        if method == "POST" and idempotency_key is None:
            raise ValueError("every POST to Mollie carries an Idempotency-Key")
        headers = {
            "Authorization": f"Bearer {self.config.api_key}",
            "Accept": "application/hal+json",
            "User-Agent": "ticketing-payments/1.0",
        }
        body = b""
        if payload is not None:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        url = path if path.startswith("http") else self.base + path
        resp = await self._send(method, url, content=body, headers=lambda: headers, params=params)
        return resp.json() if resp.content else None

    def _network_error(self, exc: httpx.HTTPError) -> MollieError:
        return MollieError("network_error", repr(exc))

    def _error(self, resp: httpx.Response) -> MollieError:
        try:
            data = resp.json()
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        raw = data.get("status")
        status = raw if isinstance(raw, int) else resp.status_code
        detail = str(data.get("detail") or data.get("title") or resp.reason_phrase)
        field = data.get("field")
        return MollieError(
            _code(status, detail),
            detail,
            status=status,
            field=str(field) if field else None,
        )

    # ------------------------------------------------------------------------------- payments
    async def create_payment(
        self,
        *,
        amount: int,
        currency: str,
        description: str,
        order_id: str,
        payment_id: str,
    ) -> dict[str, Any]:
        """Create a payment; the buyer pays at its ``_links.checkout.href``. Keyed on our attempt
        id, so a retried create returns the same Mollie payment."""
        data = await self._request(
            "POST",
            "/payments",
            payload={
                "amount": {"currency": currency, "value": to_value(amount, currency)},
                "description": description[:255],
                "redirectUrl": self.config.redirect_url.replace("{order_id}", order_id),
                "webhookUrl": self.config.webhook_url,
                "metadata": {"order_id": order_id, "payment_id": payment_id},
            },
            idempotency_key=f"payment-{payment_id}",
        )
        assert data is not None
        return data

    async def get_payment(self, mollie_id: str) -> dict[str, Any]:
        if not PAYMENT_ID.fullmatch(mollie_id):
            raise MollieError("not_found", f"not a payment id: {mollie_id!r}", status=404)
        data = await self._request("GET", f"/payments/{mollie_id}")
        assert data is not None
        return data

    async def cancel_payment(self, mollie_id: str) -> dict[str, Any]:
        """Cancel an open payment (so a late buyer cannot pay); Mollie allows it only while the
        payment ``isCancelable``."""
        data = await self._request("DELETE", f"/payments/{mollie_id}")
        assert data is not None
        return data

    # -------------------------------------------------------------------------------- refunds
    async def create_refund(
        self,
        mollie_payment_id: str,
        *,
        amount: int,
        currency: str,
        refund_id: str,
        description: str | None = None,
    ) -> dict[str, Any]:
        """Refund (part of) a paid payment, keyed on our refund id: retries never refund twice."""
        body: dict[str, Any] = {
            "amount": {"currency": currency, "value": to_value(amount, currency)},
            "metadata": {"refund_id": refund_id},
        }
        if description:
            body["description"] = description[:140]
        data = await self._request(
            "POST",
            f"/payments/{mollie_payment_id}/refunds",
            payload=body,
            idempotency_key=f"refund-{refund_id}",
        )
        assert data is not None
        return data

    async def get_refund(self, mollie_payment_id: str, mollie_refund_id: str) -> dict[str, Any]:
        data = await self._request(
            "GET", f"/payments/{mollie_payment_id}/refunds/{mollie_refund_id}"
        )
        assert data is not None
        return data

    async def list_refunds(self, mollie_payment_id: str) -> list[dict[str, Any]]:
        """Every refund of a payment (all pages)."""
        out: list[dict[str, Any]] = []
        url: str | None = f"/payments/{mollie_payment_id}/refunds"
        params: dict[str, str] | None = {"limit": "250"}
        while url:
            page = await self._request("GET", url, params=params)
            assert page is not None
            out.extend(page.get("_embedded", {}).get("refunds", []))
            nxt = (page.get("_links") or {}).get("next")
            url, params = (
                (nxt["href"], None) if isinstance(nxt, dict) and nxt.get("href") else (None, None)
            )
        return out

    async def cancel_refund(self, mollie_payment_id: str, mollie_refund_id: str) -> None:
        """Withdraw a refund; Mollie allows it only while ``queued`` or ``pending``."""
        await self._request("DELETE", f"/payments/{mollie_payment_id}/refunds/{mollie_refund_id}")
