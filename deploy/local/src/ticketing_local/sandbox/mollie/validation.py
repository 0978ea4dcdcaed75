"""Request bodies: JSON or (like Mollie's curl examples) ``a[b]=c`` forms, and the field rules
with Mollie's ``422`` wording where it is known (B1, B4)."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .errors import ApiError, unprocessable
from .wire import CURRENCIES, Json, decimals

METADATA_MAX_BYTES = 1024
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


def parse_body(content_type: str | None, body: bytes) -> Json:
    """The request parameters: a JSON object, or a form with ``amount[value]``-style keys."""
    if not body.strip():
        return {}
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type == "application/x-www-form-urlencoded":
        return _parse_form(body)
    try:
        data = json.loads(body)
    except ValueError:
        raise ApiError(400, "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object")
    return data


def _parse_form(body: bytes) -> Json:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "The request body is not a valid form") from None
    params: Json = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        path = [head, *_BRACKETS.findall(key[len(head) :])]
        target = params
        for part in path[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ApiError(400, f"The form parameter {key} is invalid")
            target = nested
        target[path[-1]] = value
    if isinstance(params.get("metadata"), str):  # curl -d "metadata={…}" sends JSON text
        with contextlib.suppress(ValueError):
            params["metadata"] = json.loads(params["metadata"])
    return params


def reject_unknown(params: Json, known: Iterable[str]) -> None:
    """Mollie refuses parameters it does not know (typos surface instead of being ignored)."""
    allowed = set(known)
    for name in params:
        if name not in allowed:
            raise unprocessable(f'Non-existent body parameter "{name}" for this API call.', name)


def amount_field(params: Json, *, required_detail: str) -> tuple[str, Decimal]:
    """``amount{currency, value}``: ``value`` a string with exactly the currency's decimals."""
    amount = params.get("amount")
    if amount is None:
        raise unprocessable(required_detail, "amount")
    if not isinstance(amount, dict):
        raise unprocessable("The amount is invalid", "amount")
    currency = amount.get("currency")
    if currency is None or currency == "":
        raise unprocessable("The amount does not contain a currency", "amount.currency")
    if not isinstance(currency, str) or currency.upper() not in CURRENCIES:
        raise unprocessable("The currency is not supported", "amount.currency")
    currency = currency.upper()
    value = amount.get("value")
    if value is None:
        raise unprocessable("The amount does not contain a value", "amount.value")
    places = decimals(currency)
    pattern = r"-?\d+" if places == 0 else rf"-?\d+\.\d{{{places}}}"
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise unprocessable("The amount contains an invalid value", "amount.value")
    try:
        return currency, Decimal(value)
    except InvalidOperation:
        raise unprocessable("The amount contains an invalid value", "amount.value") from None


def string_field(
    params: Json, name: str, *, required: bool, label: str, max_len: int | None = None
) -> str | None:
    value = params.get(name)
    if value is None:
        if required:
            raise unprocessable(f"The {label} is required", name)
        return None
    if not isinstance(value, str):
        raise unprocessable(f"The {label} is invalid", name)
    if required and not value.strip():
        raise unprocessable(f"The {label} is required", name)
    return value if max_len is None else value[:max_len]


def url_field(params: Json, name: str, *, required: bool, label: str) -> str | None:
    """An absolute ``http(s)`` URL. Deviation: Mollie refuses webhook URLs it cannot reach
    (``localhost``, private addresses); locally those are the only ones there are."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise unprocessable(f"The {label} is invalid", name)
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise unprocessable(f"The {label} is invalid", name)
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise unprocessable(f"The {label} is invalid", name)
    return value


def metadata_field(params: Json) -> Any:
    """Any JSON value, about 1 kB at most once serialized."""
    metadata = params.get("metadata")
    if metadata is not None:
        size = len(json.dumps(metadata, separators=(",", ":")).encode("utf-8"))
        if size > METADATA_MAX_BYTES:
            raise unprocessable("The metadata is too large (1 kB at most)", "metadata")
    return metadata


def choice_field(params: Json, name: str, choices: Iterable[str], default: str) -> str:
    value = params.get(name, default)
    if value not in set(choices):
        raise unprocessable(f"The {name} is invalid", name)
    return str(value)
