"""What every HTTP input model of the services is built from: bounded numbers and times, and text
that PostgreSQL can store.

Numbers and flags are never coerced: their fields are strict (``StrictInt``, ``StrictBool`` and
the types below), so ``true``, ``"5"`` and ``1.0`` are not integers, and ``1`` or ``"true"`` not
booleans. Ids and times stay lax: FastAPI validates the parsed JSON, where they are strings.

Whatever a client sends is refused with ``422`` here, before it can reach the database as a value
the database refuses (a NUL character in text, an integer beyond ``bigint``, a time beyond the
calendar): those would otherwise surface as 500s.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, model_validator

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


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class StrictInput(BaseModel):
    """A request body: unknown fields refused, and no text anywhere in it containing a NUL
    character (PostgreSQL cannot store one in text or jsonb)."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul_characters(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("text must not contain NUL (\\u0000) characters")
        return data
