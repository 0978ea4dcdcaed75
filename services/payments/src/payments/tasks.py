"""Provider tasks: calls decided in a transaction (close a payment, execute or withdraw a refund)
and made by the worker after it committed, with retries and backoff."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from ticketing_shared import db

from . import mollie_flow, pacing, service
from . import repository as repo
from .providers import ProviderError, Providers

log = logging.getLogger(__name__)
#: the longest pause between two attempts of a task
TASK_BACKOFF_CAP_S = 300.0


TaskHandler = Callable[[asyncpg.Connection, asyncpg.Record, Providers, bool], Awaitable[None]]

#: what each (provider, kind) of task does; the argument ``give_up`` says it is the last attempt
HANDLERS: dict[tuple[str, str], TaskHandler] = {
    ("wechatpay", "close"): lambda conn, task, p, give_up: service.close_wechat(
        conn, task, p.wechat
    ),
    ("wechatpay", "refund"): lambda conn, task, p, give_up: service.refund_wechat(
        conn, task, p.wechat, give_up=give_up
    ),
    ("mollie", "close"): lambda conn, task, p, give_up: mollie_flow.close(conn, task, p.mollie),
    ("mollie", "refund"): lambda conn, task, p, give_up: mollie_flow.refund(
        conn, task, p.mollie, give_up=give_up
    ),
    ("mollie", "cancel_refund"): lambda conn, task, p, give_up: mollie_flow.cancel_refund(
        conn, task, p.mollie
    ),
}


class UnknownTask(LookupError):
    """A task no handler knows (a release that wrote kinds this one does not): it fails, loudly,
    rather than being marked done with nothing done."""


async def _execute(
    conn: asyncpg.Connection, task: asyncpg.Record, providers: Providers, *, give_up: bool
) -> None:
    handler = HANDLERS.get((task["provider"], task["kind"]))
    if handler is None:
        raise UnknownTask(f"no handler for {task['provider']} {task['kind']} tasks")
    await handler(conn, task, providers, give_up)


async def run_due_tasks(
    pool: asyncpg.Pool, providers: Providers, *, limit: int, max_attempts: int
) -> int:
    """Execute due provider tasks; failures are retried with jittered backoff (no earlier than
    the provider's ``Retry-After``), then given up.

    The claimed rows stay locked (``SKIP LOCKED`` for other workers) while the provider is called,
    so a batch is small and each call has a timeout."""
    async with db.transaction(pool) as conn:
        tasks = await repo.claim_tasks(conn, limit=limit)
        for task in tasks:
            attempts = task["attempts"] + 1
            try:
                await _execute(conn, task, providers, give_up=attempts >= max_attempts)
                await repo.finish_task(conn, task["id"], status="DONE")
            except UnknownTask as exc:
                log.error(
                    "payments.task_unknown",
                    extra={
                        "task": task["kind"],
                        "provider": task["provider"],
                        "id": str(task["id"]),
                    },
                )
                await repo.finish_task(conn, task["id"], status="FAILED", error=str(exc))
            except ProviderError as exc:
                give_up = not exc.retryable or attempts >= max_attempts
                log.warning(
                    "payments.task_failed",
                    extra={
                        "task": task["kind"],
                        "provider": task["provider"],
                        "reference": task["reference"],
                        "code": exc.code,
                        "attempts": attempts,
                    },
                )
                # jittered, so tasks that failed together (a provider outage) do not all come
                # back in the same second; never before the provider's Retry-After
                retry_at = (
                    None
                    if give_up
                    else datetime.now(UTC)
                    + timedelta(
                        seconds=pacing.retry_delay(
                            attempts, exc.retry_after_s, base_s=2.0, cap_s=TASK_BACKOFF_CAP_S
                        )
                    )
                )
                await repo.finish_task(
                    conn,
                    task["id"],
                    status="FAILED" if give_up else "RETRY",
                    error=f"{exc.code}: {exc.message}",
                    retry_at=retry_at,
                )
        return len(tasks)
