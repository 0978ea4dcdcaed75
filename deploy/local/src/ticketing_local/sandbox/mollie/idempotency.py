"""``Idempotency-Key`` (B5): the first answer to a key is kept for ``ttl_s`` and replayed.

Keys are scoped per API key. A replay needs the same method, path and parameters (JSON bodies are
compared parsed, so key order and spacing do not matter); another endpoint or other parameters →
``400``; a key whose first request is still running → ``409``. Only final answers are kept: 2xx and
4xx except ``429`` (a rate limit asks for a retry); 5xx answers are forgotten, so a retry with the
same key runs again — Mollie guarantees a 5xx made no change.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import IDEMPOTENCY_IN_FLIGHT, IDEMPOTENCY_MISMATCH, ApiError


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: bytes
    media_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Entry:
    fingerprint: bytes
    created: float
    response: StoredResponse | None = None  # None while the first request runs


def fingerprint(method: str, path: str, query: str, body: bytes) -> bytes:
    """What must match for a replay: method, path, query and the parameters."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    return f"{method} {path}?{query}\n".encode() + canonical


def cacheable(status: int) -> bool:
    return 200 <= status < 300 or (400 <= status < 500 and status != 429)


class IdempotencyCache:
    """Idempotency keys per API key, oldest first, forgotten after ``ttl_s``."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[tuple[str, str], _Entry] = {}

    def _expired(self, entry: _Entry, now: float) -> bool:
        return entry.response is not None and now - entry.created >= self.ttl_s

    def _prune(self, now: float) -> None:
        while self._entries:
            slot, entry = next(iter(self._entries.items()))
            if not self._expired(entry, now):
                return
            del self._entries[slot]

    def begin(self, scope: str, key: str, print_: bytes) -> StoredResponse | None:
        """Claim ``key``: None (go ahead, then :meth:`finish`) or the answer to replay.

        Raises ``400`` for a different request under the same key, ``409`` while it runs.
        """
        now = self._clock()
        self._prune(now)
        slot = (scope, key)
        entry = self._entries.get(slot)
        if entry is not None and self._expired(entry, now):
            del self._entries[slot]
            entry = None
        if entry is None:
            self._entries[slot] = _Entry(print_, now)
            return None
        if entry.fingerprint != print_:
            raise ApiError(400, IDEMPOTENCY_MISMATCH)
        if entry.response is None:
            raise ApiError(409, IDEMPOTENCY_IN_FLIGHT)
        return entry.response

    def finish(self, scope: str, key: str, response: StoredResponse | None) -> None:
        """Keep ``response`` for replays, or (None, or not cacheable) forget the key."""
        slot = (scope, key)
        entry = self._entries.get(slot)
        if entry is None:
            return
        if response is None or not cacheable(response.status):
            del self._entries[slot]
        else:
            entry.response = response

    def __len__(self) -> int:
        return len(self._entries)
