"""Mollie's wire formats: compact JSON, ISO 8601 times in UTC, ids, money as decimal strings."""

from __future__ import annotations

import json
import secrets
import string
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

ALNUM = string.ascii_letters + string.digits

Json = dict[str, Any]

#: ISO 4217 codes Mollie accepts (its multicurrency list) and their number of decimals in
#: ``amount.value``; every other accepted currency uses 2
_CURRENCY_LIST = "AED AUD BGN BRL CAD CHF CZK DKK EUR GBP HKD HUF ILS ISK JPY MXN MYR NOK NZD PHP PLN RON RUB SEK SGD THB TWD USD ZAR"
CURRENCIES: frozenset[str] = frozenset(_CURRENCY_LIST.split())
ZERO_DECIMAL_CURRENCIES: frozenset[str] = frozenset({"ISK", "JPY"})


def dumps(obj: Any) -> bytes:
    """Serialize like Mollie: compact, UTF-8, slashes unescaped."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """``2018-03-20T09:13:37+00:00``, as Mollie writes ``createdAt`` and friends."""
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def iso_ms(moment: datetime) -> str:
    """The same with milliseconds, for the sandbox's own delivery records."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


def new_id(prefix: str) -> str:
    """``tr_``/``re_`` + 10 alphanumerics, like ``tr_7UhSN1zuXS``."""
    return prefix + random_alnum(10)


def decimals(currency: str) -> int:
    return 0 if currency in ZERO_DECIMAL_CURRENCIES else 2


def money_value(currency: str, value: Decimal) -> str:
    """The ``value`` string with exactly the currency's decimals (never ``-0.00``)."""
    if value == 0:
        value = Decimal(0)
    return f"{value:.{decimals(currency)}f}"


def money(currency: str, value: Decimal) -> Json:
    return {"currency": currency, "value": money_value(currency, value)}


def link(href: str, media_type: str = "application/hal+json") -> Json:
    return {"href": href, "type": media_type}
