"""What every provider adapter shares: its error type, so the task loop can treat failures alike."""

from __future__ import annotations

from typing import Any


class ProviderError(Exception):
    """A provider answered with an error, or could not be reached (``status`` 0).

    ``retryable`` says whether the same call, with the same idempotency handle, may be made
    again: the provider may not have acted, and acting twice is impossible by construction.
    """

    provider = "provider"

    def __init__(self, code: str, message: str, *, status: int = 0, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code, self.message, self.status, self.detail = code, message, status, detail

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 429
