"""Helpers shared by the use cases: tenant access, events to the outbox, ids, time."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import UUID

import asyncpg
import uuid_utils

from ticketing_shared import outbox
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import EventData
from ticketing_shared.errors import NotFound

from .. import repository as repo
from ..domain import AuditEntry

SOURCE = "orders"


def new_id() -> UUID:
    """uuid7: time-ordered ids keep the indexes of busy tables compact."""
    return UUID(str(uuid_utils.uuid7()))


def now() -> datetime:
    return datetime.now(UTC)


async def emit(conn: asyncpg.Connection, event: EventData, subject: UUID | str) -> UUID:
    return await outbox.emit(conn, event, subject=subject, source=SOURCE)


def require_tenant_member(principal: Principal, tenant_id: str, what: str = "resource") -> None:
    """404 (not 403) for outsiders: another tenant's things do not exist for them."""
    if not principal.is_member_of(tenant_id):
        raise NotFound(f"{what} not found")


def require_staff(principal: Principal, tenant_id: str, what: str = "resource") -> None:
    """Outsiders get 404, members without owner/admin get 403."""
    require_tenant_member(principal, tenant_id, what)
    principal.require_staff(tenant_id)


def actor(principal: Principal) -> str:
    return f"user:{principal.sub}"


def staff_reason(principal: Principal, tenant_id: str) -> str:
    """The cancellation reason of a staff action: ``admin`` for platform admins and tenant admins."""
    if principal.platform_admin or principal.role_in(tenant_id) == "admin":
        return "admin"
    return "organizer"


async def event_title(conn: asyncpg.Connection, event_id: UUID) -> str:
    return await repo.event_title(conn, event_id)


def cancellation_audit(
    tenant: str,
    order_id: UUID,
    who: str,
    reason: str,
    regs: list[UUID],
    invites: list[UUID],
) -> list[AuditEntry]:
    """Audit rows for registrations cancelled and invites voided together with their order's seats."""
    return [
        *[
            AuditEntry(
                tenant_id=tenant,
                order_id=order_id,
                entity="registration",
                entity_id=str(r),
                actor=who,
                action="registration.cancelled",
                to_status="CANCELLED",
                details={"reason": reason},
            )
            for r in regs
        ],
        *[
            AuditEntry(
                tenant_id=tenant,
                order_id=order_id,
                entity="invite",
                entity_id=str(i),
                actor=who,
                action="invite.voided",
                to_status="VOID",
                details={},
            )
            for i in invites
        ],
    ]
