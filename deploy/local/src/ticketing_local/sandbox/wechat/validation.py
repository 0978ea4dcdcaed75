"""Request-body rules of the provider API: JSON objects without ``null``, typed and bounded
fields, each refusal a ``PARAM_ERROR`` naming the field by its JSON pointer."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from .errors import ApiError
from .wire import Json

RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})")


def _pointer(parent: str, key: str | int) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{parent}/{token}"


def _find_null(value: Any, pointer: str = "") -> str | None:
    """Return the JSON pointer of the first ``null`` in ``value`` (WeChat forbids them)."""
    if value is None:
        return pointer
    if isinstance(value, dict):
        for key, item in value.items():
            found = _find_null(item, _pointer(pointer, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_null(item, _pointer(pointer, index))
            if found is not None:
                return found
    return None


def _has_unsupported_chars(text: str) -> bool:
    """True for characters outside the 1–3-byte UTF-8 range (emoji, surrogates)."""
    return any(ord(c) > 0xFFFF or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def parse_json_object(body: bytes) -> Json:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(
            "PARAM_ERROR", "请求体不是合法的JSON", issue=f"invalid JSON: {exc}", field=""
        ) from None
    if not isinstance(data, dict):
        raise ApiError("PARAM_ERROR", "请求体必须是JSON对象", field="", issue="not an object")
    null_at = _find_null(data)
    if null_at is not None:
        raise ApiError("PARAM_ERROR", field=null_at, issue="null is not allowed; omit the key")
    return data


def string_field(
    obj: Json,
    key: str,
    pointer: str,
    *,
    required: bool,
    max_len: int | None = None,
    min_len: int = 1,
) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
        return None
    if not isinstance(value, str):
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be a string")
    if _has_unsupported_chars(value):
        raise ApiError(
            "PARAM_ERROR",
            "字符集错误，仅支持UTF-8编码为1至3字节的字符",
            field=pointer,
            value=value,
            issue="characters outside 1-3-byte UTF-8 are not supported",
        )
    if len(value) < min_len or (max_len is not None and len(value) > max_len):
        raise ApiError(
            "PARAM_ERROR",
            field=pointer,
            value=value,
            issue=f"length must be between {min_len} and {max_len}",
        )
    return value


def positive_int_field(obj: Json, key: str, pointer: str) -> int:
    value = obj.get(key)
    if value is None:
        raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
    if type(value) is not int:
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be an integer (fen)")
    if value < 1:
        raise ApiError("PARAM_ERROR", field=pointer, value=value, issue="must be at least 1")
    return value


def currency_field(obj: Json, pointer: str) -> str:
    currency = obj.get("currency", "CNY")
    if currency != "CNY":
        raise ApiError(
            "PARAM_ERROR",
            field=pointer,
            value=currency if isinstance(currency, str) else None,
            issue="Currency code is invalid",
        )
    return "CNY"


def notify_url_field(obj: Json, pointer: str, *, required: bool) -> str | None:
    url = string_field(obj, "notify_url", pointer, required=required, max_len=256)
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ApiError("PARAM_ERROR", field=pointer, value=url, issue="must be an absolute URL")
    if "?" in url or "#" in url:
        raise ApiError(
            "PARAM_ERROR",
            "notify_url不能携带查询参数",
            field=pointer,
            value=url,
            issue="must not carry a query string",
        )
    return url


def object_field(obj: Json, key: str, pointer: str, *, required: bool) -> Json | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise ApiError("PARAM_ERROR", f"缺少参数{key}", field=pointer, issue="required")
        return None
    if not isinstance(value, dict):
        raise ApiError("PARAM_ERROR", field=pointer, issue="must be an object")
    return value


def parse_rfc3339(text: str, pointer: str) -> datetime:
    if not RFC3339_RE.fullmatch(text):
        raise ApiError(
            "PARAM_ERROR", field=pointer, value=text, issue="must be RFC 3339 with an offset"
        )
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("PARAM_ERROR", field=pointer, value=text, issue="invalid time") from None
