"""HTTP routes of the refunds service (tenant owners and admins, and platform admins)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal
from uuid import UUID

import asyncpg
from fastapi import Query, Request

from ticketing_shared import catchup, idempotency, paging
from ticketing_shared.errors import NotFound
from ticketing_shared.idempotency import IdempotencyKey
from ticketing_shared.web import REQUIRES_IDEMPOTENCY_KEY, FastJSONResponse, api_router

from . import service
from .dependencies import AppSettings, Caller, Database, Db
from .errors import OrderNotPaid
from .schemas import EventRefundPage, RefundCreate, RefundDetail, RefundPublic
from .settings import Settings

router = api_router()


@router.post(
    "/orders/{order_id}/refunds",
    status_code=201,
    response_model=RefundPublic,
    openapi_extra=REQUIRES_IDEMPOTENCY_KEY,
)
async def create_refund(
    order_id: UUID,
    body: RefundCreate,
    request: Request,
    principal: Caller,
    database: Db,
    settings: AppSettings,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Refund a paid order in full, by seats, or by amount. Requires ``Idempotency-Key``."""
    idem = idempotency.for_request(request, principal.sub, idempotency_key, body, required=True)
    assert idem is not None

    async def attempt() -> tuple[int, dict[str, Any]]:
        async with database.transaction(tenants=principal.tenant_scope()) as conn:
            return await service.request_refund(
                conn,
                principal,
                order_id,
                amount=body.amount,
                seat_ids=[i.seat_id for i in body.items] if body.items is not None else None,
                reason=body.reason,
                note=body.note,
                internal_note=body.internal_note,
                idem=idem,
            )

    # the organizer acts on what orders showed them; refunds may hear of it a moment later
    try:
        status, payload = await attempt()
    except NotFound:
        if not await catchup.order_learned(
            database.pool, order_id, within=settings.order_wait_ms / 1000
        ):
            raise
        status, payload = await _once_paid(database, order_id, settings, attempt)
    except OrderNotPaid:
        status, payload = await _once_paid(database, order_id, settings, attempt, found=True)
    return FastJSONResponse(payload, status_code=status)


async def _once_paid(
    database: Database,
    order_id: UUID,
    settings: Settings,
    call: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    *,
    found: bool = False,
) -> tuple[int, dict[str, Any]]:
    """``call()`` again once refunds has heard the order was paid; if it was not within the
    bound, the answer stands (409 ``order_not_refundable``).

    An organizer refunds the order they just saw PAID while ``order.paid`` is still on its way
    here (tens of milliseconds): that request waits for it rather than answering 409."""
    if not found:
        try:
            return await call()
        except OrderNotPaid:
            pass

    async def paid(conn: asyncpg.Connection) -> bool:
        async with database.on(conn, order=order_id):
            return await service.order_paid(conn, order_id)

    await catchup.wait_until(database.pool, paid, timeout=settings.paid_wait_ms / 1000)
    return await call()


@router.get("/orders/{order_id}/refunds", response_model=list[RefundPublic])
async def list_refunds(order_id: UUID, principal: Caller, database: Db) -> Any:
    """Every refund of an order, oldest first: for the tenant's owners and admins, and for the
    order's buyer (without ``internal_note``)."""
    async with database.transaction(order=order_id) as conn:
        return await service.list_refunds(conn, principal, order_id)


@router.get("/events/{event_id}/refunds", response_model=EventRefundPage)
async def event_refunds(
    event_id: UUID,
    principal: Caller,
    database: Db,
    status: Annotated[
        Literal["pending", "queued", "processing", "refunded", "failed", "canceled"] | None,
        Query(),
    ] = None,
    needs_action: Annotated[
        bool, Query(description="only payments we could not give back (refund failed)")
    ] = False,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> Any:
    """A page of the refunds of the event's orders, oldest first, each with its buyer's e-mail
    address and ``needs_action`` (tenant owners and admins)."""
    async with database.transaction(tenants=principal.tenant_scope()) as conn:
        return await service.event_refunds(
            conn,
            principal,
            event_id,
            status=status,
            only_needing_action=needs_action,
            limit=limit,
            cursor=cursor,
        )


@router.get("/refunds/{refund_id}", response_model=RefundDetail)
async def get_refund(refund_id: UUID, principal: Caller, database: Db) -> Any:
    """One refund with its audit trail."""
    async with database.transaction(tenants=principal.tenant_scope()) as conn:
        return await service.get_refund(conn, principal, refund_id)


@router.post("/refunds/{refund_id}/cancel", status_code=202, response_model=RefundPublic)
async def cancel_refund(refund_id: UUID, principal: Caller, database: Db) -> Any:
    """Withdraw a ``pending`` or ``queued`` refund (``cancel_requested``; the provider decides)."""
    async with database.transaction(tenants=principal.tenant_scope()) as conn:
        return await service.cancel_refund(conn, principal, refund_id)
