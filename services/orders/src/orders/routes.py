"""HTTP routes of the orders service: parse, call one use case, return."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import Depends, Query, Request, Response
from fastapi.responses import StreamingResponse

from ticketing_shared import paging
from ticketing_shared.auth import TenantIdPath
from ticketing_shared.idempotency import IdempotencyKey
from ticketing_shared.inputs import ONE_LINE, EventTime
from ticketing_shared.web import FastJSONResponse, api_router

from . import repository as repo
from .dependencies import AppSettings, Caller, Db, Links, idempotent
from .schemas import (
    AuditEntry,
    AuditPage,
    CancellationPoliciesIn,
    EventCreate,
    EventFromTemplate,
    EventPage,
    EventPublic,
    EventUpdate,
    InvitePublic,
    OrderPage,
    OrderPublic,
    RegistrationCreate,
    RegistrationCreated,
    RegistrationPage,
    RegistrationPublic,
    StaffAction,
    TemplateCreate,
    TemplatePage,
    TemplatePublic,
    TicketTypeCreate,
    TicketTypePublic,
    TicketTypeUpdate,
)
from .service import catalog, invites, lifecycle, purchase, registrations, seats, views

router = api_router()


# ----------------------------------------------------------------------------------------- catalog
@router.get("/tenants/{tenant_id}/cancellation-policies")
async def get_cancellation_policies(
    tenant_id: TenantIdPath, principal: Caller, db: Db
) -> dict[str, Any]:
    """The tenant's cancellation policy variants (owner/admin)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await catalog.get_policies(conn, principal, tenant_id)


@router.put("/tenants/{tenant_id}/cancellation-policies")
async def put_cancellation_policies(
    tenant_id: TenantIdPath, body: CancellationPoliciesIn, principal: Caller, db: Db
) -> dict[str, Any]:
    """Replace the tenant's cancellation policy variants (owner/admin)."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return await catalog.put_policies(conn, principal, tenant_id, body)


@router.get("/tenants/{tenant_id}/event-templates", response_model=TemplatePage)
async def list_event_templates(
    tenant_id: TenantIdPath,
    principal: Caller,
    db: Db,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> Any:
    """A page of the tenant's event templates, oldest first (tenant members)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await views.tenant_templates(conn, principal, tenant_id, limit=limit, cursor=cursor)


@router.get("/tenants/{tenant_id}/events", response_model=EventPage)
async def list_events(
    tenant_id: TenantIdPath,
    principal: Caller,
    db: Db,
    status: Annotated[Literal["draft", "published", "cancelled"] | None, Query()] = None,
    starts_from: Annotated[
        EventTime | None, Query(alias="from", description="starting at or after")
    ] = None,
    starts_to: Annotated[EventTime | None, Query(alias="to", description="starting before")] = None,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> Any:
    """A page of the tenant's events by start time (tenant members)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await views.tenant_events(
            conn,
            principal,
            tenant_id,
            status=status,
            starts_from=starts_from,
            starts_to=starts_to,
            limit=limit,
            cursor=cursor,
        )


@router.post("/tenants/{tenant_id}/event-templates", status_code=201, response_model=TemplatePublic)
async def create_event_template(
    tenant_id: TenantIdPath, body: TemplateCreate, principal: Caller, db: Db
) -> Any:
    """Create an event template with its ticket types (owner/admin)."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return dict(await catalog.create_template(conn, principal, tenant_id, body))


@router.post("/event-templates/{template_id}/events", status_code=201, response_model=EventPublic)
async def create_event_from_template(
    template_id: UUID, body: EventFromTemplate, principal: Caller, db: Db
) -> Any:
    """Create an event (and its ticket types) from a template, overriding any field."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        event, ticket_types = await catalog.create_event_from_template(
            conn, principal, template_id, body
        )
        return views.event_public(event, ticket_types)


@router.post("/tenants/{tenant_id}/events", status_code=201, response_model=EventPublic)
async def create_event(
    tenant_id: TenantIdPath, body: EventCreate, principal: Caller, db: Db
) -> Any:
    """Create a published event (owner/admin)."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return views.event_public(await catalog.create_event(conn, principal, tenant_id, body))


@router.get("/events/{event_id}", response_model=EventPublic)
async def get_event(event_id: UUID, principal: Caller, db: Db) -> Any:
    """An event with its ticket types and their inventory."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        event, ticket_types = await catalog.get_event(conn, principal, event_id)
        return views.event_public(event, ticket_types)


@router.patch("/events/{event_id}", response_model=EventPublic)
async def update_event(event_id: UUID, body: EventUpdate, principal: Caller, db: Db) -> Any:
    """Change an event (e.g. reschedule it); cancellation windows follow its new start."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return views.event_public(await catalog.update_event(conn, principal, event_id, body))


@router.post("/events/{event_id}/ticket-types", status_code=201, response_model=TicketTypePublic)
async def create_ticket_type(
    event_id: UUID, body: TicketTypeCreate, principal: Caller, db: Db
) -> Any:
    """Add a ticket type with its price tiers (owner/admin)."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return views.ticket_type_public(
            await catalog.create_ticket_type(conn, principal, event_id, body)
        )


@router.patch("/ticket-types/{ticket_type_id}", response_model=TicketTypePublic)
async def update_ticket_type(
    ticket_type_id: UUID, body: TicketTypeUpdate, principal: Caller, db: Db
) -> Any:
    """Change a ticket type; max_quantity never below the seats already taken."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return views.ticket_type_public(
            await catalog.update_ticket_type(conn, principal, ticket_type_id, body)
        )


# ------------------------------------------------------------------------------------ purchasing
@router.post(
    "/events/{event_id}/registrations", status_code=201, response_model=RegistrationCreated
)
async def create_registration(
    event_id: UUID,
    body: RegistrationCreate,
    request: Request,
    principal: Caller,
    db: Db,
    settings: AppSettings,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Register (free) or buy (paid: a PENDING order holding the seats until it expires)."""
    idem = idempotent(request, principal, idempotency_key, body)
    async with db.connection() as conn:  # the purchase is one self-committing statement
        status, payload, replayed = await purchase.register(
            conn,
            principal,
            event_id,
            body,
            catalog=request.app.state.purchase_catalog,
            links=request.app.state.invite_links,
            order_ttl=settings.order_ttl,
            idem=idem,
            max_quantity_per_order=settings.max_quantity_per_order,
        )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return FastJSONResponse(payload, status_code=status, headers=headers)


@router.get("/orders/{order_id}", response_model=OrderPublic)
async def get_order(order_id: UUID, principal: Caller, db: Db) -> Any:
    """An order: status, amounts, seats, registrations, invites, refund summary."""
    async with db.read(of=("order", order_id)) as conn:
        return await views.get_order(conn, principal, order_id)


@router.get("/me/orders", response_model=OrderPage)
async def my_orders(
    principal: Caller,
    db: Db,
    event_id: UUID | None = None,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> Any:
    """A page of the caller's orders, newest first, optionally for one event."""
    async with db.read(user=principal.sub) as conn:
        return await views.my_orders(conn, principal, event_id, limit=limit, cursor=cursor)


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic)
async def cancel_order(order_id: UUID, principal: Caller, db: Db) -> Any:
    """The buyer cancels a PENDING order; its seats are released at once."""
    async with db.transaction(of=("order", order_id)) as conn:
        await lifecycle.cancel_pending_order(conn, principal, order_id)
        return await views.load_order(conn, order_id)


@router.post(
    "/orders/{order_id}/seats/{seat_id}/cancel",
    response_model=OrderPublic,
    responses={
        200: {"description": "The policy gives nothing back: the seat is void and released"},
        202: {"description": "Its refund is on its way: the seat goes when it settles"},
    },
)
async def return_seat(
    order_id: UUID, seat_id: UUID, principal: Caller, db: Db, response: Response
) -> Any:
    """The buyer gives back a gift seat nobody redeemed, under the cancellation policy of their
    own registration (window, fees; the quote is on the order's seat): a refund of that seat's
    share, then seat and invite VOID and the seat released. A redeemed seat is its guest's to
    cancel."""
    async with db.transaction(of=("order", order_id)) as conn:
        response.status_code = await seats.return_seat(conn, principal, order_id, seat_id)
        return await views.get_order(conn, principal, order_id)


@router.get("/orders/{order_id}/audit", response_model=list[AuditEntry])
async def order_audit(order_id: UUID, principal: Caller, db: Db) -> Any:
    """Every change of the order, its seats, registrations and invites (tenant staff)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await views.order_audit(conn, principal, order_id)


# --------------------------------------------------------------------------------------- invites
@router.get("/orders/{order_id}/invites", response_model=list[InvitePublic])
async def order_invites(order_id: UUID, principal: Caller, db: Db, links: Links) -> Any:
    """The buyer's invite links for the extra seats."""
    async with db.read(of=("order", order_id)) as conn:
        return await views.order_invites(conn, principal, order_id, links)


@router.post("/invites/{token}/redeem", status_code=201)
async def redeem_invite(token: str, principal: Caller, db: Db, links: Links) -> dict[str, Any]:
    """Redeem an open invite: the caller gets a registration on its seat (once)."""
    invite = invites.locate(token, links)
    async with db.transaction(of=invite) as conn:
        return {"registration": RegistrationPublic(**await invites.redeem(conn, principal, invite))}


# --------------------------------------------------------------------------------- registrations
RegistrationStatusFilter = Annotated[
    Literal["PENDING_PAYMENT", "PENDING", "APPROVED", "REJECTED", "CANCELLED"] | None, Query()
]
OrderStatusFilter = Annotated[
    Literal["PENDING", "PAID", "REFUND_PENDING", "PARTIALLY_REFUNDED", "REFUNDED", "CANCELLED"]
    | None,
    Query(),
]
SearchText = Annotated[
    str | None,
    Query(
        min_length=1,
        max_length=200,
        pattern=ONE_LINE,
        description="e-mail address or name contains (case-insensitive)",
    ),
]


def _registration_filter(
    status: RegistrationStatusFilter = None,
    order_status: OrderStatusFilter = None,
    ticket_type_id: UUID | None = None,
    q: SearchText = None,
) -> repo.RegistrationFilter:
    return repo.RegistrationFilter(
        status=status, order_status=order_status, ticket_type_id=ticket_type_id, q=q
    )


Filters = Annotated[repo.RegistrationFilter, Depends(_registration_filter)]


@router.get("/events/{event_id}/registrations", response_model=RegistrationPage)
async def event_registrations(
    event_id: UUID,
    principal: Caller,
    db: Db,
    filters: Filters,
    limit: paging.Limit = 50,
    cursor: paging.Cursor = None,
) -> Any:
    """A page of the event's registrations, oldest first, with each one's order status and the
    refund that cancelled it; ``total`` counts every match (tenant owners and admins)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await views.event_registrations(
            conn, principal, event_id, filters, limit=limit, cursor=cursor
        )


@router.get(
    "/events/{event_id}/registrations.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV, header row first"}},
)
async def export_event_registrations(
    event_id: UUID, principal: Caller, db: Db, filters: Filters
) -> StreamingResponse:
    """Every registration of the event matching the filters, as CSV (UTF-8, a header row, the
    list's order), streamed (tenant owners and admins)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        await views.check_export(conn, principal, event_id)

    async def lines() -> AsyncIterator[bytes]:
        # PostgreSQL writes the CSV (COPY) into a small queue; the response takes it from there,
        # so a slow client slows the copy down instead of filling memory
        chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)

        async def keep(chunk: bytes) -> None:
            await chunks.put(bytes(chunk))  # a copy: the driver may reuse its buffer

        async def copy() -> None:
            async with db.read(tenants=principal.tenant_scope()) as conn:
                await repo.plan_for_these_values(conn)
                await repo.export_event_registrations(conn, event_id, filters, keep)

        writer = asyncio.create_task(copy())
        try:
            yield "\ufeff".encode()  # the BOM: spreadsheets then read the file as UTF-8
            while True:
                getter = asyncio.ensure_future(chunks.get())
                await asyncio.wait({getter, writer}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                    continue
                getter.cancel()  # the copy is over: what it wrote is still in the queue
                while not chunks.empty():
                    yield chunks.get_nowait()
                await writer  # a copy that failed half-way ends the stream with its error
                return
        finally:
            writer.cancel()  # the client went away: stop the copy, free the connection

    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="registrations-{event_id}.csv"'},
    )


@router.get("/events/{event_id}/audit", response_model=AuditPage)
async def event_audit(
    event_id: UUID,
    principal: Caller,
    db: Db,
    limit: paging.Limit = 100,
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> Any:
    """Every change of the event, its ticket types and its tenant's cancellation policies,
    oldest first (tenant owners and admins)."""
    async with db.read(tenants=principal.tenant_scope()) as conn:
        return await views.event_audit(
            conn, principal, event_id, limit=limit, cursor=int(cursor) if cursor else None
        )


@router.get("/registrations/{registration_id}", response_model=RegistrationPublic)
async def get_registration(registration_id: UUID, principal: Caller, db: Db) -> Any:
    """A registration with ``can_cancel`` and the refund its cancellation would give."""
    async with db.read(of=("registration", registration_id)) as conn:
        return await views.get_registration(conn, principal, registration_id)


@router.post("/registrations/{registration_id}/approve", response_model=RegistrationPublic)
async def approve_registration(registration_id: UUID, principal: Caller, db: Db) -> Any:
    """Approve a PENDING registration (tenant staff)."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return await registrations.approve(conn, principal, registration_id)


@router.post("/registrations/{registration_id}/reject", response_model=RegistrationPublic)
async def reject_registration(
    registration_id: UUID, principal: Caller, db: Db, body: StaffAction | None = None
) -> Any:
    """Reject a PENDING registration (tenant staff); paid seats need a refund first."""
    async with db.transaction(tenants=principal.tenant_scope()) as conn:
        return await registrations.reject(conn, principal, registration_id, body or StaffAction())


@router.post("/registrations/{registration_id}/cancel", response_model=RegistrationPublic)
async def cancel_registration(
    registration_id: UUID,
    principal: Caller,
    db: Db,
    response: Response,
    body: StaffAction | None = None,
) -> Any:
    """The registrant cancels per policy (paid: 202, refund requested); staff cancel free seats."""
    async with db.transaction(of=("registration", registration_id)) as conn:
        status, payload = await registrations.cancel(
            conn, principal, registration_id, body or StaffAction()
        )
    response.status_code = status
    return payload
