"""When to try a provider again: exponential backoff with jitter, and the provider's own
``Retry-After`` honoured.

Every delay is jittered so that callers that failed together (a burst of webhooks, a batch of
tasks, several workers) do not come back together and fail together again. Equal jitter is used
throughout: a delay of ``d`` becomes a uniform draw in ``[d/2, d]``, spread out but never much
shorter than the backoff meant.
"""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: the longest pause a ``Retry-After`` is taken for; a larger value (or a date far ahead) is read
#: as this much, so a stray header cannot park a task for days (the task loop's own cap, too)
MAX_RETRY_AFTER_S = 300.0
#: how far past a ``Retry-After`` a caller may come back (a fraction of it), so callers told the
#: same moment (an HTTP date) spread out after it instead of arriving at once
RETRY_AFTER_SPREAD = 0.2

_SECONDS = re.compile(r"[0-9]{1,20}")


def parse_retry_after(
    value: str | None, *, now: datetime | None = None, cap_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date), within
    ``[0, cap_s]``; None when the header is absent or unreadable (then plain backoff applies)."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.fullmatch(text):
        seconds = float(int(text))
    else:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT; a zone-less one is read as such
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), cap_s)


def equal_jitter(delay_s: float) -> float:
    """A uniform draw in ``[delay_s / 2, delay_s]``."""
    half = max(delay_s, 0.0) / 2
    return half + random.uniform(0.0, half)


def backoff(attempt: int, *, base_s: float, cap_s: float) -> float:
    """The pause after failed attempt ``attempt`` (1-based): ``base_s * 2**(attempt-1)``, capped
    at ``cap_s``, with equal jitter."""
    return equal_jitter(min(base_s * 2 ** (attempt - 1), cap_s))


def retry_delay(attempt: int, retry_after_s: float | None, *, base_s: float, cap_s: float) -> float:
    """The pause before the next attempt: the jittered backoff, or — when the provider said
    ``Retry-After`` — never less than that, spread over up to ``RETRY_AFTER_SPREAD`` more."""
    delay = backoff(attempt, base_s=base_s, cap_s=cap_s)
    if retry_after_s is not None:
        spread = retry_after_s * random.uniform(1.0, 1.0 + RETRY_AFTER_SPREAD)
        delay = max(delay, spread)
    return delay
