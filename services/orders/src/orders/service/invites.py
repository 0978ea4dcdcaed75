"""Gift invites: the extra seats of a paid order, redeemed once each by signed-in users."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal
from ticketing_shared.contracts import InviteRedeemed
from ticketing_shared.errors import DomainError, NotFound
from ticketing_shared.invite_links import InviteLinks, digest, legacy_shape

from .. import repository as repo
from ..domain import AuditEntry
from ..errors import (
    AlreadyRegistered,
    InviteAlreadyRedeemed,
    InviteBeingReturned,
    InviteNotOpen,
    InviteVoid,
    OwnInvite,
)
from . import views
from .common import actor, emit, new_id, now

_NOT_OPEN: dict[str, tuple[type[DomainError], str]] = {
    "LOCKED": (InviteNotOpen, "this invite opens when its order is paid"),
    "REDEEMED": (InviteAlreadyRedeemed, "this invite has already been used"),
    "VOID": (InviteVoid, "this invite is no longer valid"),
}


InviteRef = tuple[Literal["invite_id"], UUID] | tuple[Literal["invite"], str]


def locate(token: str, links: InviteLinks) -> InviteRef:
    """Where a token leads: the invite it names (checked in constant time), or, for a token from
    before HMAC tokens, the invite holding its digest. Anything else is not found, like a token
    that leads nowhere (no answer tells them apart), and never reaches the database."""
    invite_id = links.invite_id(token)
    if invite_id is not None:
        return ("invite_id", invite_id)
    if legacy_shape(token):
        return ("invite", digest(token))
    raise NotFound("invite not found")


async def redeem(
    conn: asyncpg.Connection, principal: Principal, invite_ref: InviteRef
) -> dict[str, Any]:
    """Exactly once: the first signed-in user to redeem an OPEN invite gets a registration on its seat."""
    if invite_ref[0] == "invite_id":
        invite = await repo.get_invite(conn, invite_id=invite_ref[1], for_update=True)
    else:
        invite = await repo.get_invite(conn, digest=invite_ref[1], for_update=True)
    if invite is None:
        raise NotFound("invite not found")
    if invite["status"] != "OPEN":
        problem, message = _NOT_OPEN[invite["status"]]
        raise problem(message)
    if invite["return_requested_at"] is not None:
        raise InviteBeingReturned("the buyer is giving this seat back")
    order = await repo.get_order(conn, invite["order_id"])
    assert order is not None
    if order["buyer_id"] == principal.sub:
        raise OwnInvite("invites are for guests: the buyer already holds a seat of this order")
    if await repo.user_has_registration_on_order(conn, order["id"], principal.sub):
        raise AlreadyRegistered("you already hold a seat of this order")
    event = await repo.get_event(conn, order["event_id"])
    assert event is not None
    buyer_reg = await repo.buyer_policy(conn, order["id"], order["buyer_id"])
    assert buyer_reg is not None
    registration_id = new_id()
    status = "PENDING" if event["require_approval"] else "APPROVED"
    await repo.insert_registration(
        conn,
        {
            "id": registration_id,
            "tenant_id": order["tenant_id"],
            "event_id": order["event_id"],
            "ticket_type_id": order["ticket_type_id"],
            "order_id": order["id"],
            "seat_id": invite["seat_id"],
            "user_id": principal.sub,
            "email": principal.email,
            "name": principal.name,
            "locale": principal.locale,
            "status": status,
            "cancellation_policy": buyer_reg["cancellation_policy"],
            "policy_source": buyer_reg["policy_source"],
            "created_at": now(),
            "updated_at": now(),
        },
    )
    if not await repo.redeem_invite(
        conn, invite["id"], user_id=principal.sub, registration_id=registration_id
    ):
        raise InviteAlreadyRedeemed("this invite has already been used")
    who = actor(principal)
    await repo.audit_many(
        conn,
        [
            AuditEntry(
                tenant_id=order["tenant_id"],
                order_id=order["id"],
                entity="invite",
                entity_id=str(invite["id"]),
                actor=who,
                action="invite.redeemed",
                from_status="OPEN",
                to_status="REDEEMED",
                details={"registration_id": str(registration_id)},
            ),
            AuditEntry(
                tenant_id=order["tenant_id"],
                order_id=order["id"],
                entity="registration",
                entity_id=str(registration_id),
                actor=who,
                action="registration.created",
                to_status=status,
                details={"seat_id": str(invite["seat_id"]), "via": "invite"},
            ),
        ],
    )
    await emit(
        conn,
        InviteRedeemed(
            order_id=order["id"],
            tenant_id=order["tenant_id"],
            seat_id=invite["seat_id"],
            registration_id=registration_id,
            redeemer_id=principal.sub,
            redeemer_email=principal.email,
            buyer_email=order["buyer_email"],
            buyer_locale=order["buyer_locale"],
            event_title=event["title"],
        ),
        order["id"],
    )
    return await views.get_registration(conn, principal, registration_id)
