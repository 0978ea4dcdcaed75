"""Catalog: tenants' cancellation policies, event templates, events, ticket types."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import EventRescheduled
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import unpaid_limit
from ..errors import MaxQuantityBelowTaken
from ..schemas import (
    CancellationPoliciesIn,
    EventCreate,
    EventFromTemplate,
    EventUpdate,
    TemplateCreate,
    TicketTypeCreate,
    TicketTypeUpdate,
)
from .common import SOURCE, actor, new_id, require_staff


async def get_policies(
    conn: asyncpg.Connection, principal: Principal, tenant_id: str
) -> dict[str, Any]:
    """The tenant's cancellation policy variants."""
    require_staff(principal, tenant_id, "tenant")
    return await repo.get_policies(conn, tenant_id)


async def put_policies(
    conn: asyncpg.Connection, principal: Principal, tenant_id: str, body: CancellationPoliciesIn
) -> dict[str, Any]:
    """Replace the tenant's cancellation policy variants (audited)."""
    require_staff(principal, tenant_id, "tenant")
    variants = body.variants()
    await repo.set_policies(conn, tenant_id, variants)
    await repo.audit(
        conn,
        tenant_id=tenant_id,
        order_id=None,
        entity="tenant",
        entity_id=tenant_id,
        actor=actor(principal),
        action="cancellation_policies.updated",
        details={"policies": variants},
    )
    return variants


def _ticket_type_row(tt: TicketTypeCreate) -> dict[str, Any]:
    return {
        "name": tt.name,
        "max_quantity": tt.max_quantity,
        "max_unpaid_per_buyer": unpaid_limit(
            tt.max_unpaid_per_buyer, [t.quantity for t in tt.price_tiers], current=None
        ),
        "price_tiers": [t.model_dump() for t in tt.price_tiers],
        "organizer_registration": tt.organizer_registration,
        "use_tenant_cancellation_policy": tt.use_tenant_cancellation_policy,
        "cancellation_policy": tt.cancellation_policy.model_dump()
        if tt.cancellation_policy
        else None,
    }


async def create_template(
    conn: asyncpg.Connection, principal: Principal, tenant_id: str, body: TemplateCreate
) -> asyncpg.Record:
    """An event template with its template ticket types."""
    require_staff(principal, tenant_id, "tenant")
    await repo.ensure_tenant(conn, tenant_id)
    return await repo.insert_template(
        conn,
        template_id=new_id(),
        tenant_id=tenant_id,
        title=body.title,
        require_approval=body.require_approval,
        currency=body.currency,
        ticket_types=[_ticket_type_row(t) for t in body.ticket_types],
    )


async def create_event(
    conn: asyncpg.Connection, principal: Principal, tenant_id: str, body: EventCreate
) -> asyncpg.Record:
    """A published event of the tenant."""
    require_staff(principal, tenant_id, "tenant")
    await repo.ensure_tenant(conn, tenant_id)
    event = await repo.insert_event(
        conn,
        event_id=new_id(),
        tenant_id=tenant_id,
        title=body.title,
        starts_at=body.starts_at,
        require_approval=body.require_approval,
        currency=body.currency,
    )
    await repo.audit(
        conn,
        tenant_id=tenant_id,
        order_id=None,
        entity="event",
        entity_id=event["id"],
        actor=actor(principal),
        action="event.created",
        to_status=event["status"],
    )
    return event


async def create_event_from_template(
    conn: asyncpg.Connection, principal: Principal, template_id: UUID, body: EventFromTemplate
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """Copy a template into a new event and its ticket types; any field may be overridden."""
    template = await repo.get_template(conn, template_id)
    if template is None or not principal.is_member_of(template["tenant_id"]):
        raise NotFound("event template not found")
    require_staff(principal, template["tenant_id"], "event template")
    event = await repo.insert_event(
        conn,
        event_id=new_id(),
        tenant_id=template["tenant_id"],
        template_id=template_id,
        title=body.title or template["title"],
        starts_at=body.starts_at,
        require_approval=template["require_approval"]
        if body.require_approval is None
        else body.require_approval,
        currency=body.currency or template["currency"],
    )
    ticket_types = (
        [_ticket_type_row(t) for t in body.ticket_types]
        if body.ticket_types is not None
        else template["ticket_types"]
    )
    created = [
        await repo.insert_ticket_type(
            conn, ticket_type_id=new_id(), event_id=event["id"], tenant_id=event["tenant_id"], **tt
        )
        for tt in ticket_types
    ]
    await repo.audit(
        conn,
        tenant_id=event["tenant_id"],
        order_id=None,
        entity="event",
        entity_id=event["id"],
        actor=actor(principal),
        action="event.created_from_template",
        to_status=event["status"],
        details={"template_id": str(template_id)},
    )
    return event, created


async def get_event(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID
) -> tuple[asyncpg.Record, list[asyncpg.Record]]:
    """A published event (any signed-in user) or any event of one's own tenant."""
    event = await repo.get_event(conn, event_id)
    if event is None or (
        event["status"] != "published" and not principal.is_member_of(event["tenant_id"])
    ):
        raise NotFound("event not found")
    return event, await repo.list_ticket_types(conn, event_id)


async def update_event(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID, body: EventUpdate
) -> asyncpg.Record:
    """Change title, start (reschedule) or approval; cancellation windows follow the new start."""
    event = await repo.get_event(conn, event_id, for_update=True)
    if event is None or not principal.is_member_of(event["tenant_id"]):
        raise NotFound("event not found")
    require_staff(principal, event["tenant_id"], "event")
    fields = body.model_dump(exclude_none=True)
    if not fields:
        return event
    updated = await repo.update_event(conn, event_id, fields)
    if updated["starts_at"] != event["starts_at"]:
        await _tell_holders_of_the_move(conn, event, updated)
    await repo.audit(
        conn,
        tenant_id=event["tenant_id"],
        order_id=None,
        entity="event",
        entity_id=event_id,
        actor=actor(principal),
        action="event.updated",
        details={k: str(v) for k, v in fields.items()},
    )
    return updated


async def _tell_holders_of_the_move(
    conn: asyncpg.Connection, before: asyncpg.Record, after: asyncpg.Record
) -> None:
    """One ``event.rescheduled`` per holder of an active registration (by e-mail address)."""
    holders = await repo.event_holders(conn, after["id"])
    await outbox.emit_many(
        conn,
        [
            (
                EventRescheduled(
                    registration_id=h["id"],
                    order_id=h["order_id"],
                    tenant_id=after["tenant_id"],
                    event_id=after["id"],
                    user_id=h["user_id"],
                    email=h["email"],
                    locale=h["locale"],
                    event_title=after["title"],
                    previous_starts_at=before["starts_at"],
                    starts_at=after["starts_at"],
                ),
                h["order_id"] or h["id"],
            )
            for h in holders
        ],
        source=SOURCE,
    )


async def create_ticket_type(
    conn: asyncpg.Connection, principal: Principal, event_id: UUID, body: TicketTypeCreate
) -> asyncpg.Record:
    """A ticket type (registration option) with price tiers and its cancellation policy setting."""
    event = await repo.get_event(conn, event_id)
    if event is None or not principal.is_member_of(event["tenant_id"]):
        raise NotFound("event not found")
    require_staff(principal, event["tenant_id"], "event")
    tt = await repo.insert_ticket_type(
        conn,
        ticket_type_id=new_id(),
        event_id=event_id,
        tenant_id=event["tenant_id"],
        **_ticket_type_row(body),
    )
    await repo.audit(
        conn,
        tenant_id=event["tenant_id"],
        order_id=None,
        entity="ticket_type",
        entity_id=tt["id"],
        actor=actor(principal),
        action="ticket_type.created",
        details={"max_quantity": tt["max_quantity"], "price_tiers": tt["price_tiers"]},
    )
    return tt


async def update_ticket_type(
    conn: asyncpg.Connection, principal: Principal, ticket_type_id: UUID, body: TicketTypeUpdate
) -> asyncpg.Record:
    """Change a ticket type; ``max_quantity`` can never drop below the seats already taken."""
    tt = await repo.get_ticket_type(conn, ticket_type_id)
    if tt is None or not principal.is_member_of(tt["tenant_id"]):
        raise NotFound("ticket type not found")
    require_staff(principal, tt["tenant_id"], "ticket type")
    fields: dict[str, Any] = {}
    data = body.model_dump(exclude_unset=True)
    for key in ("name", "max_quantity", "organizer_registration", "use_tenant_cancellation_policy"):
        if data.get(key) is not None:
            fields[key] = data[key]
    if body.price_tiers is not None:
        fields["price_tiers"] = [t.model_dump() for t in body.price_tiers]
    if body.max_unpaid_per_buyer is not None or body.price_tiers is not None:
        tiers = fields.get("price_tiers", tt["price_tiers"])
        fields["max_unpaid_per_buyer"] = unpaid_limit(
            body.max_unpaid_per_buyer,
            [int(t["quantity"]) for t in tiers],
            current=tt["max_unpaid_per_buyer"],
        )
    if "cancellation_policy" in data:
        fields["cancellation_policy"] = (
            body.cancellation_policy.model_dump() if body.cancellation_policy else None
        )
    if not fields:
        return tt
    updated = await repo.update_ticket_type(conn, ticket_type_id, fields)
    if updated is None:
        raise MaxQuantityBelowTaken(
            f"max_quantity cannot go below the {tt['current_quantity']} seats already taken"
        )
    await repo.audit(
        conn,
        tenant_id=tt["tenant_id"],
        order_id=None,
        entity="ticket_type",
        entity_id=ticket_type_id,
        actor=actor(principal),
        action="ticket_type.updated",
        details={"fields": sorted(fields)},
    )
    return updated
