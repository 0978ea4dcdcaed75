"""What every HTTP input model of the services is built from: bounded numbers and times, and text
that PostgreSQL can store.

Numbers and flags are never coerced: their fields are strict (``StrictInt``, ``StrictBool`` and
the types below), so ``true``, ``"5"`` and ``1.0`` are not integers, and ``1`` or ``"true"`` not
booleans. Ids and times stay lax: FastAPI validates the parsed JSON, where they are strings.

Text holds no control characters (C0, U+0000-U+001F, and DEL, U+007F): a line of text (a title,
a name, a note shown to a buyer) none at all (:data:`Line`), free text of several lines (a staff
note) only TAB, LF and CR (:data:`FreeText`). They would break what the text goes into (logs,
e-mails, the providers' fields, CSV exports), and NUL cannot be stored by PostgreSQL.

Whatever a client sends is refused with ``422`` here, before it can reach the database as a value
the database refuses (a NUL character in text, an integer beyond ``bigint``, a time beyond the
calendar): those would otherwise surface as 500s.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    model_validator,
)

# Text as patterns, so that the OpenAPI documents say it too (and schemathesis tries both sides).
ONE_LINE = r"^[^\x00-\x1f\x7f]*$"
MULTI_LINE = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
Line = Annotated[str, StringConstraints(pattern=ONE_LINE)]
FreeText = Annotated[str, StringConstraints(pattern=MULTI_LINE)]
# any control character (of a line, or of a path or query parameter)
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
# what no text may hold, free text included
_NOT_IN_ANY_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")

# Amounts in minor units: ten billion of the major unit, so that even millions of them summed
# (refund totals, reports) stay far inside PostgreSQL's bigint.
MAX_AMOUNT = 10**12
Amount = Annotated[
    int, Strict(), Field(ge=0, le=MAX_AMOUNT, description="minor units (cents, fen)")
]
PositiveAmount = Annotated[
    int, Strict(), Field(gt=0, le=MAX_AMOUNT, description="minor units (cents, fen)")
]

# Times of events and schedules: within a range any arithmetic on them (cut-offs of up to ten
# years, time zones) stays inside Python's and PostgreSQL's calendars.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2999, 12, 31, tzinfo=UTC)


def _aware_and_bounded(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("the time must carry a UTC offset (RFC 3339)")
    if not EARLIEST <= value <= LATEST:
        raise ValueError("the time must lie between 1970 and 2999")
    return value


EventTime = Annotated[datetime, AfterValidator(_aware_and_bounded)]


def _has_control_character(value: Any) -> bool:
    if isinstance(value, str):
        return _NOT_IN_ANY_TEXT.search(value) is not None
    if isinstance(value, dict):
        return any(_has_control_character(k) or _has_control_character(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_control_character(v) for v in value)
    return False


class StrictInput(BaseModel):
    """A request body: unknown fields refused, and no text anywhere in it, keys included, with a
    control character but TAB, LF and CR (whatever its field's type says: NUL never reaches
    PostgreSQL). Its text fields are :data:`Line` (or narrower) unless declared
    :data:`FreeText`."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_control_characters(cls, data: Any) -> Any:
        if _has_control_character(data):
            raise ValueError(
                "text must not contain control characters (U+0000-U+001F, U+007F; free text may"
                " hold TAB, LF and CR)"
            )
        return data
