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
from .dependencies import AppSettings, Caller, Pool
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
    pool: Pool,
    settings: AppSettings,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Refund a paid order in full, by seats, or by amount. Requires ``Idempotency-Key``."""
    idem = idempotency.for_request(request, principal.sub, idempotency_key, body, required=True)
    assert idem is not None

    async def attempt() -> tuple[int, dict[str, Any]]:
        return await service.request_refund(
            pool,
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
        if not await catchup.order_learned(pool, order_id, within=settings.order_wait_ms / 1000):
            raise
        status, payload = await _once_paid(pool, order_id, settings, attempt)
    except OrderNotPaid:
        status, payload = await _once_paid(pool, order_id, settings, attempt, found=True)
    return FastJSONResponse(payload, status_code=status)


async def _once_paid(
    pool: asyncpg.Pool,
    order_id: UUID,
    settings: Settings,
    call: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    *,
    found: bool = False,
) -> tuple[int, dict[str, Any]]:
    """``call()`` again once refunds has heard the order was paid; if it was not within the
    bound, the answer stands (409 ``order_not_refundable``)."""
    if not found:
        try:
            return await call()
        except OrderNotPaid:
            pass
    await service.order_paid(pool, order_id, within=settings.paid_wait_ms / 1000)
    return await call()


@router.get("/orders/{order_id}/refunds", response_model=list[RefundPublic])
async def list_refunds(order_id: UUID, principal: Caller, pool: Pool) -> Any:
    """Every refund of an order, oldest first: for the tenant's owners and admins, and for the
    order's buyer (without ``internal_note``)."""
    return await service.list_refunds(pool, principal, order_id)


@router.get("/events/{event_id}/refunds", response_model=EventRefundPage)
async def event_refunds(
    event_id: UUID,
    principal: Caller,
    pool: Pool,
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
    return await service.event_refunds(
        pool,
        principal,
        event_id,
        status=status,
        only_needing_action=needs_action,
        limit=limit,
        cursor=cursor,
    )


@router.get("/refunds/{refund_id}", response_model=RefundDetail)
async def get_refund(refund_id: UUID, principal: Caller, pool: Pool) -> Any:
    """One refund with its audit trail."""
    return await service.get_refund(pool, principal, refund_id)


@router.post("/refunds/{refund_id}/cancel", status_code=202, response_model=RefundPublic)
async def cancel_refund(refund_id: UUID, principal: Caller, pool: Pool) -> Any:
    """Withdraw a ``pending`` or ``queued`` refund (``cancel_requested``; the provider decides)."""
    return await service.cancel_refund(pool, principal, refund_id)
