"""WeChat's wire formats: compact JSON, RFC 3339 times in China Standard Time, random ids."""

from __future__ import annotations

import json
import secrets
import string
from datetime import datetime, timedelta, timezone
from typing import Any

CST = timezone(timedelta(hours=8), "CST")
ALNUM = string.ascii_letters + string.digits

Json = dict[str, Any]


def dumps(obj: Any) -> bytes:
    """Serialize like WeChat: compact, UTF-8, non-ASCII kept."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(CST).isoformat(timespec="seconds")


def random_digits(n: int) -> str:
    return "".join(secrets.choice(string.digits) for _ in range(n))


def random_alnum(n: int) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))
