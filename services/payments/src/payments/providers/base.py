"""What every provider adapter shares: its error type (so the task loop treats failures alike)
and the transport that retries what may be retried with the same idempotency handle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..pacing import parse_retry_after, retry_delay

#: the answers whose ``Retry-After`` says when the provider will take the call again
RETRY_AFTER_STATUSES = frozenset({429, 503})


class ProviderError(Exception):
    """A provider answered with an error, or could not be reached (``status`` 0).

    ``retryable`` says whether the same call, with the same idempotency handle, may be made
    again: the provider may not have acted, and acting twice is impossible by construction.
    ``retry_after_s`` is how long the provider asked us to wait first (its ``Retry-After``), if
    it said so.
    """

    provider = "provider"

    def __init__(self, code: str, message: str, *, status: int = 0, detail: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.code, self.message, self.status, self.detail = code, message, status, detail
        self.retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.status == 429


class ProviderClient:
    """An adapter's HTTP transport: a call is retried with jittered backoff while the provider's
    error says it may be (the request carries the same idempotency handle each time).

    A ``Retry-After`` on a 429 or 503 is honoured: the next attempt comes no earlier. The pauses
    of one call stay within ``budget_s`` (a webhook must be answered, a task holds row locks):
    when the provider asks for a longer wait than is left, the call gives up at once with the
    retryable error, and the caller's own retry (a task's next attempt, Mollie's next webhook
    call) comes back later; ``retry_after_s`` on the error tells it when.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 4,
        backoff_s: float = 0.2,
        budget_s: float = 5.0,
    ) -> None:
        self.http = http
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.budget_s = budget_s

    def _error(self, resp: httpx.Response) -> ProviderError:
        raise NotImplementedError

    def _network_error(self, exc: httpx.HTTPError) -> ProviderError:
        raise NotImplementedError

    async def _send(
        self,
        method: str,
        url: str,
        *,
        content: bytes,
        headers: Callable[[], dict[str, str]],
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The first 2xx answer; ``headers`` is called per attempt (signatures are fresh)."""
        deadline = time.monotonic() + self.budget_s
        for attempt in range(1, self.max_attempts + 1):
            try:
                resp = await self.http.request(
                    method, url, content=content, headers=headers(), params=params
                )
            except httpx.HTTPError as exc:
                error = self._network_error(exc)
            else:
                if 200 <= resp.status_code < 300:
                    return resp
                error = self._error(resp)
                if resp.status_code in RETRY_AFTER_STATUSES:
                    error.retry_after_s = parse_retry_after(resp.headers.get("retry-after"))
            if not error.retryable or attempt == self.max_attempts:
                raise error
            delay = retry_delay(
                attempt, error.retry_after_s, base_s=self.backoff_s, cap_s=self.budget_s
            )
            if delay > deadline - time.monotonic():
                raise error
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")
