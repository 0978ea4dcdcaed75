"""Payments worker: order read model consumers, the outbox relay, provider tasks."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

import httpx
from starlette.applications import Starlette

from ticketing_shared.contracts import (
    OrderCancelled,
    OrderExpired,
    RefundCancelRequested,
    RefundRequested,
)
from ticketing_shared.envelope import CloudEvent
from ticketing_shared.retention import Rule
from ticketing_shared.worker import WorkerContext
from ticketing_shared.worker import create_worker as create_base_worker

from . import pacing, tasks
from .consumers import build_consumer
from .flows import Flows
from .settings import Settings

#: the events whose handlers queue provider tasks (close, refund, cancel_refund)
TASK_MAKING_EVENTS = frozenset(
    m.ce_type for m in (OrderCancelled, OrderExpired, RefundRequested, RefundCancelRequested)
)


def create_worker(settings: Settings | None = None) -> Starlette:
    """Build the payments worker."""
    settings = settings or Settings()
    consumer = build_consumer(settings)
    work_queued = asyncio.Event()  # a consumer committed provider work: look at the tasks now

    def wake_tasks(event: CloudEvent) -> None:
        if event.type in TASK_MAKING_EVENTS:  # not the read model's events: nothing to do there
            work_queued.set()

    consumer.after_commit.append(wake_tasks)

    async def provider_tasks(ctx: WorkerContext) -> None:
        """Close abandoned provider payments, execute and withdraw refunds, with retries."""
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout_s, connect=3.0)
        ) as http:
            flows = Flows.from_settings(settings, http)
            while not ctx.stopping.is_set():
                done = await tasks.run_due_tasks(
                    ctx.all_tenants_pool,
                    flows,
                    limit=10,
                    max_attempts=settings.task_max_attempts,
                )
                if done:
                    continue
                work_queued.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(work_queued.wait(), timeout=settings.task_interval_s)
                if ctx.stopping.is_set():
                    return

    async def reconcile(ctx: WorkerContext) -> None:
        """Ask the provider about attempts whose webhooks may have been lost."""
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout_s, connect=3.0)
        ) as http:
            mollie = Flows.from_settings(settings, http).mollie
            # jittered, so several workers (replicas) do not ask Mollie in step
            while not await ctx.sleep(pacing.equal_jitter(settings.reconcile_interval_s)):
                await mollie.reconcile(
                    ctx.all_tenants_pool,
                    after_s=settings.mollie_reconcile_after_s,
                    every_s=settings.mollie_reconcile_every_s,
                )

    return create_base_worker(
        settings,
        consumers=[consumer],
        schedulers=[provider_tasks, reconcile],
        retention=retention_rules(settings),
    )


def retention_rules(settings: Settings) -> list[Rule]:
    """What payments prunes besides every service's inbox and idempotency keys."""
    return [
        Rule(
            "provider_notifications",
            "received_at",
            timedelta(days=settings.notification_retention_days),
        )
    ]
