"""The per-id coalescing of Mollie webhook fetches, on its own (the fetch is a test double; the
whole path against the Mollie sandbox is in tests/e2e/test_mollie.py)."""

from __future__ import annotations

import asyncio

import pytest

from payments.webhook_gate import GateFull, WebhookGate
from ticketing_local.testing import wait_until


class Provider:
    """A fetch that reads the current ``status`` when it starts and finishes when released."""

    def __init__(self) -> None:
        self.status = "open"
        self.starts: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = asyncio.Event()
        self.release.set()
        self.fail_next: Exception | None = None  # the next fetch to finish raises this

    async def fetch(self) -> str:
        self.starts.append(asyncio.get_running_loop().time())
        seen = self.status
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
            if self.fail_next is not None:
                error, self.fail_next = self.fail_next, None
                raise error
            return seen
        finally:
            self.in_flight -= 1


async def _started(provider: Provider, n: int) -> bool:
    return len(provider.starts) >= n


async def test_concurrent_webhooks_make_one_fetch_and_one_trailing_fetch() -> None:
    gate, provider = WebhookGate(min_interval_s=0, max_ids=10), Provider()
    provider.release.clear()
    first = asyncio.create_task(gate.run("tr_A", provider.fetch))
    await wait_until(lambda: _started(provider, 1), message="the first fetch")
    # news arrives after the first fetch read the payment, then 49 webhooks about it
    provider.status = "paid"
    rest = [asyncio.create_task(gate.run("tr_A", provider.fetch)) for _ in range(49)]
    await asyncio.sleep(0)  # a yield, not a wait: they all queue behind the fetch in flight
    assert len(provider.starts) == 1
    provider.release.set()
    outcomes = await asyncio.gather(first, *rest)
    assert outcomes == ["open"] + ["paid"] * 49  # the trailing fetch saw the news
    assert len(provider.starts) == 2 and provider.most_in_flight == 1


async def test_fetches_of_one_id_start_at_least_the_interval_apart() -> None:
    gate, provider = WebhookGate(min_interval_s=0.3, max_ids=10), Provider()
    loop = asyncio.get_running_loop()
    assert await gate.run("tr_A", provider.fetch) == "open"
    # one webhook after another, each answered before the next is sent: still spaced
    for _ in range(3):
        arrived = loop.time()
        await gate.run("tr_A", provider.fetch)
        assert loop.time() - arrived < 0.3 + 0.25  # waited for the next start, not longer
    gaps = [b - a for a, b in zip(provider.starts, provider.starts[1:], strict=False)]
    assert len(provider.starts) == 4 and all(gap >= 0.3 for gap in gaps), gaps


async def test_webhooks_within_the_interval_are_absorbed_into_the_next_fetch() -> None:
    gate, provider = WebhookGate(min_interval_s=0.3, max_ids=10), Provider()
    await gate.run("tr_A", provider.fetch)
    provider.status = "paid"  # after the first fetch, inside the interval
    outcomes = await asyncio.gather(*(gate.run("tr_A", provider.fetch) for _ in range(20)))
    assert outcomes == ["paid"] * 20 and len(provider.starts) == 2
    # other ids are not held back by this one
    assert await gate.run("tr_B", provider.fetch) == "paid" and len(provider.starts) == 3


async def test_an_idle_id_is_forgotten_and_the_number_of_ids_is_capped() -> None:
    gate, provider = WebhookGate(min_interval_s=0.2, max_ids=2), Provider()
    await gate.run("tr_A", provider.fetch)
    await gate.run("tr_B", provider.fetch)
    assert len(gate) == 2 and "tr_A" in gate
    with pytest.raises(GateFull):
        await gate.run("tr_C", provider.fetch)
    assert len(provider.starts) == 2  # refused without a fetch
    await wait_until(lambda: _empty(gate), timeout=5, message="idle ids forgotten")
    assert await gate.run("tr_C", provider.fetch) == "open"


async def _empty(gate: WebhookGate) -> bool:
    return len(gate) == 0


async def test_a_failed_fetch_fails_its_waiters_only() -> None:
    gate, provider = WebhookGate(min_interval_s=0, max_ids=10), Provider()
    provider.release.clear()
    provider.fail_next = RuntimeError("provider unreachable")
    first = asyncio.create_task(gate.run("tr_A", provider.fetch))
    await wait_until(lambda: _started(provider, 1), message="the first fetch")
    queued = [asyncio.create_task(gate.run("tr_A", provider.fetch)) for _ in range(3)]
    await asyncio.sleep(0)  # a yield: they queue behind the fetch in flight
    provider.release.set()
    with pytest.raises(RuntimeError):
        await first
    assert await asyncio.gather(*queued) == ["open"] * 3


async def test_a_waiter_that_hangs_up_does_not_cancel_the_fetch_of_the_others() -> None:
    gate, provider = WebhookGate(min_interval_s=0, max_ids=10), Provider()
    provider.release.clear()
    gone = asyncio.create_task(gate.run("tr_A", provider.fetch))
    stays = asyncio.create_task(gate.run("tr_A", provider.fetch))
    await wait_until(lambda: _started(provider, 1), message="the fetch")
    gone.cancel()
    provider.release.set()
    assert await stays == "open"
    assert gone.cancelled() and len(provider.starts) == 1


async def test_closing_cancels_what_is_queued() -> None:
    gate, provider = WebhookGate(min_interval_s=10, max_ids=10), Provider()
    await gate.run("tr_A", provider.fetch)
    queued = asyncio.create_task(gate.run("tr_A", provider.fetch))  # waits out the interval
    await asyncio.sleep(0)  # a yield: it queues behind the interval
    await gate.aclose()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert len(gate) == 0 and len(provider.starts) == 1
