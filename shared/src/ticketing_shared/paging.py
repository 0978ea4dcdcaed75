"""Cursor paging for list endpoints: ``{items, next_cursor}``.

A page is read in a stable order (a time, then an id) from just after the last row of the page
before, so that rows written meanwhile neither repeat nor vanish, and reading page 1,000 costs
what reading page 1 costs (an index seek, not an offset scan).

The cursor is opaque to clients: the sort key of the last row served, as URL-safe base64 of JSON.
A cursor that does not decode to such a key is refused with 422 ``invalid_cursor``; nothing in it
is trusted further than its types (it only ever says where to start reading).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from fastapi import Query

from .errors import Unprocessable
from .inputs import EARLIEST, LATEST

MAX_LIMIT = 200
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="rows per page (at most 200)")]
Cursor = Annotated[
    str | None,
    Query(
        max_length=200,
        pattern=r"^[A-Za-z0-9_-]+={0,2}$",
        description="``next_cursor`` of the page before (opaque)",
    ),
]


class InvalidCursor(Unprocessable):
    code, title = "invalid_cursor", "This cursor is not one this list gave out"


def encode(at: datetime, row_id: UUID) -> str:
    """The cursor of a row sorted by ``(at, row_id)``."""
    raw = json.dumps([at.isoformat(), str(row_id)], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> tuple[datetime, UUID] | None:
    """``(at, row_id)`` of the row a page starts after; None for the first page."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at_text, id_text = json.loads(raw)
        at, row_id = datetime.fromisoformat(at_text), UUID(id_text)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidCursor("cursor must be the next_cursor of an earlier page") from None
    if at.tzinfo is None or not EARLIEST <= at <= LATEST:
        raise InvalidCursor("cursor must be the next_cursor of an earlier page")
    return at, row_id


def page(
    rows: Sequence[Any], limit: int, key: tuple[str, str] = ("created_at", "id")
) -> tuple[list[Any], str | None]:
    """Rows read with ``LIMIT limit + 1`` → (the page's rows, the next page's cursor or None)."""
    items = list(rows[:limit])
    if len(rows) <= limit:
        return items, None
    last = items[-1]
    return items, encode(last[key[0]], last[key[1]])
