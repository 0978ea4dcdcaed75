"""Provider tasks: calls decided in a transaction (close a payment, execute or withdraw a refund)
and made by the worker after it committed, with retries and backoff."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from ticketing_shared import db

from . import pacing
from . import repository as repo
from .flows import Flow, Flows, UnknownTask
from .providers import ProviderError

log = logging.getLogger(__name__)
#: the longest pause between two attempts of a task
TASK_BACKOFF_CAP_S = 300.0


TaskHandler = Callable[[Flow, asyncpg.Connection, asyncpg.Record, bool], Awaitable[None]]

#: what each kind of task does, with the flow of its provider; ``give_up``: the last attempt
HANDLERS: dict[str, TaskHandler] = {
    "close": lambda flow, conn, task, give_up: flow.close(conn, task),
    "refund": lambda flow, conn, task, give_up: flow.refund(conn, task, give_up=give_up),
    "cancel_refund": lambda flow, conn, task, give_up: flow.cancel_refund(conn, task),
}


async def _execute(
    conn: asyncpg.Connection, task: asyncpg.Record, flows: Flows, *, give_up: bool
) -> None:
    handler = HANDLERS.get(task["kind"])
    if handler is None:
        raise UnknownTask(f"no handler for {task['kind']} tasks")
    await handler(flows.of(task["provider"]), conn, task, give_up)


async def run_due_tasks(pool: asyncpg.Pool, flows: Flows, *, limit: int, max_attempts: int) -> int:
    """Execute due provider tasks; failures are retried with jittered backoff (no earlier than
    the provider's ``Retry-After``), then given up.

    The claimed rows stay locked (``SKIP LOCKED`` for other workers) while the provider is called,
    so a batch is small and each call has a timeout."""
    async with db.transaction(pool) as conn:
        tasks = await repo.claim_tasks(conn, limit=limit)
        for task in tasks:
            attempts = task["attempts"] + 1
            try:
                await _execute(conn, task, flows, give_up=attempts >= max_attempts)
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
