"""What every provider adapter shares: its error type (so the task loop treats failures alike)
and the transport that retries what may be retried with the same idempotency handle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx


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


class ProviderClient:
    """An adapter's HTTP transport: a call is retried with backoff while the provider's error
    says it may be (the request carries the same idempotency handle each time)."""

    def __init__(
        self, http: httpx.AsyncClient, *, max_attempts: int = 4, backoff_s: float = 0.2
    ) -> None:
        self.http = http
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s

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
            if not error.retryable or attempt == self.max_attempts:
                raise error
            await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise AssertionError("unreachable")
