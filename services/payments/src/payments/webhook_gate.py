"""Mollie webhooks, coalesced per payment id (in each API process).

Anyone who knows a ``tr_…`` id (the buyer sees it) can post ``id=tr_…`` as often as they like,
and each post would cost a fetch from Mollie, whose rate limit counts against our API key: a
flood on one id would hold back every other payment's news. So, for one id:

- at most one fetch is in flight;
- a webhook that arrives meanwhile starts none, but makes sure one more fetch starts after the
  current one (what it announces may have happened after the current fetch read the payment);
  every webhook waiting for that next fetch shares it, so at most one is queued;
- two fetches start at least ``min_interval_s`` apart; webhooks within the interval are absorbed
  into the next allowed fetch;
- an id none of our attempts has is answered without any fetch (a cheap lookup first).

Each webhook is answered when the first fetch that started after it arrived is done, with that
fetch's outcome: 200, or 503 when Mollie could not be asked, so Mollie calls again. Answering 200
at once would be cheaper but is not safe: the trailing fetch can still fail (Mollie unreachable,
this process stopping), and that 200 would have told Mollie its news was taken when it was not.

Memory stays bounded: an id is tracked only while a fetch of it is in flight or queued, or within
``min_interval_s`` of the last one's start, and at most ``max_ids`` ids at once; past that, a
webhook of an id not tracked is answered 503 without a fetch (Mollie calls again later).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client import Counter

from .providers.mollie import MollieError

if TYPE_CHECKING:
    from .flows import MollieFlow

log = logging.getLogger(__name__)
WEBHOOKS = Counter(
    "payments_mollie_webhooks_total",
    "Mollie webhooks of known payments, by how they were served",
    ["served"],  # fetch: queued a fetch; coalesced: joined one already queued; refused: too busy
)

Fetch = Callable[[], Awaitable[str]]


class GateFull(Exception):
    """Too many payment ids are tracked at once: this webhook is not taken."""


@dataclass
class _Tracked:
    """One payment id: its runner, the fetch queued next (its outcome shared by every webhook
    waiting for it) and when the last fetch started (loop time)."""

    runner: asyncio.Task[None] | None = None
    queued: asyncio.Future[str] | None = None
    fetch: Fetch | None = None
    last_start: float = -math.inf


class WebhookGate:
    """At most one fetch in flight and one queued per id, starts ``min_interval_s`` apart."""

    def __init__(self, *, min_interval_s: float, max_ids: int) -> None:
        self.min_interval_s = min_interval_s
        self.max_ids = max_ids
        self._ids: dict[str, _Tracked] = {}

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    async def run(self, key: str, fetch: Fetch) -> str:
        """The outcome of the first fetch of ``key`` to start from now on: the one queued
        already, or a new one queued by this call (``fetch`` makes it)."""
        tracked = self._ids.get(key)
        if tracked is None:
            if len(self._ids) >= self.max_ids:
                raise GateFull(key)
            tracked = self._ids[key] = _Tracked()
            tracked.runner = asyncio.create_task(self._drive(key, tracked))
        if tracked.queued is None:
            tracked.queued = asyncio.get_running_loop().create_future()
            tracked.fetch = fetch
            WEBHOOKS.labels("fetch").inc()
        else:
            WEBHOOKS.labels("coalesced").inc()
        # shielded: a webhook whose caller hangs up must not cancel the fetch the others await
        return await asyncio.shield(tracked.queued)

    async def _drive(self, key: str, tracked: _Tracked) -> None:
        """Start the queued fetches of ``key`` one after the other, spaced; forget the id once
        nothing is queued and the interval since the last start has passed."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                wait = tracked.last_start + self.min_interval_s - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                waiters, fetch = tracked.queued, tracked.fetch
                if waiters is None or fetch is None:
                    return
                # from here on, a new webhook queues the next fetch: this one may have read the
                # payment before that webhook's news
                tracked.queued = tracked.fetch = None
                tracked.last_start = loop.time()
                try:
                    outcome = await fetch()
                except Exception as exc:
                    waiters.set_exception(exc)
                except BaseException:
                    waiters.cancel()
                    raise
                else:
                    waiters.set_result(outcome)
        finally:
            if tracked.queued is not None:  # stopping: nobody will make that fetch
                tracked.queued.cancel()
            if self._ids.get(key) is tracked:
                del self._ids[key]

    async def aclose(self) -> None:
        """Stop every runner (the process is shutting down)."""
        runners = [t.runner for t in self._ids.values() if t.runner is not None]
        for runner in runners:
            runner.cancel()
        for runner in runners:
            with contextlib.suppress(asyncio.CancelledError):
                await runner


async def receive(
    gate: WebhookGate,
    pool: asyncpg.Pool,
    mollie: MollieFlow,
    mollie_id: str,
) -> str:
    """Mollie's webhook for ``mollie_id``, through ``gate``: the outcome of the fetch that serves
    it (``unknown_payment`` without any fetch for an id none of our attempts has). Raises a
    retryable :class:`MollieError` when Mollie could not be asked."""
    if mollie_id not in gate and not await mollie.known(pool, mollie_id):
        return "unknown_payment"
    fetch = functools.partial(mollie.on_webhook, pool, mollie_id)
    try:
        return await gate.run(mollie_id, fetch)
    except GateFull:
        WEBHOOKS.labels("refused").inc()
        # as when Mollie is unreachable: nothing was learnt, so the answer is 503 and Mollie
        # brings the news again later
        raise MollieError(
            "webhooks_backlogged", "too many payments being fetched at once", status=503
        ) from None
