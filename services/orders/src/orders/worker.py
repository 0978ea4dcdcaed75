"""Orders worker: consumers, the outbox relay and the order-expiry scheduler."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from ticketing_shared import db
from ticketing_shared.worker import WorkerContext
from ticketing_shared.worker import create_worker as create_base_worker

from .consumers import build_consumer
from .service import lifecycle
from .settings import Settings

log = logging.getLogger(__name__)


def create_worker(settings: Settings | None = None) -> Starlette:
    """Build the orders worker."""
    settings = settings or Settings()

    async def expire_orders(ctx: WorkerContext) -> None:
        """Cancel unpaid orders past their expiry, releasing their seats (SKIP LOCKED: any number of workers)."""
        while not ctx.stopping.is_set():
            async with db.transaction(ctx.pool, tenant_id=db.ALL_TENANTS) as conn:
                expired = await lifecycle.expire_due_orders(conn, limit=settings.expiry_batch)
            if expired:
                log.info("orders.expired", extra={"count": expired})
            if expired < settings.expiry_batch and await ctx.sleep(settings.expiry_interval_s):
                return

    return create_base_worker(
        settings, consumers=[build_consumer(settings)], schedulers=[expire_orders]
    )
