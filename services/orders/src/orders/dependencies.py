"""Dependencies of the orders API, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Literal
from uuid import UUID

import asyncpg
from fastapi import Depends, Request
from pydantic import BaseModel

from ticketing_shared import db, idempotency
from ticketing_shared.auth import CurrentPrincipal, Principal
from ticketing_shared.idempotency import IdempotentRequest
from ticketing_shared.invite_links import InviteLinks
from ticketing_shared.web import State

from . import repository as repo
from .settings import Settings

# an invite is found by its id (a token of ours) or by its token's digest (a token from before)
Resource = tuple[Literal["order", "registration", "invite", "invite_id"], UUID | str]


class Database:
    """The one transaction owner of a request: ``async with db.transaction(...) as conn``.

    Every transaction is scoped for row-level security (migration 0004) before anything else
    runs in it, by exactly one of: ``tenants`` (staff use cases: ``principal.tenant_scope()``),
    ``of`` (a use case on one order, registration or invite, open to its buyer: the resource's
    own tenant) or ``user`` (the tenants a person bought or registered in).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(
        self,
        *,
        tenants: str | list[str] | None = None,
        of: Resource | None = None,
        user: str | None = None,
    ) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            await _scope(conn, tenants, of, user)
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """No transaction: for use cases that are one self-committing statement (purchase), which
        scope themselves."""
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def read(
        self,
        *,
        tenants: str | list[str] | None = None,
        of: Resource | None = None,
        user: str | None = None,
    ) -> AsyncIterator[asyncpg.Connection]:
        """A repeatable-read, read-only transaction: one consistent snapshot for a view."""
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            await _scope(conn, tenants, of, user)
            yield conn


async def _scope(
    conn: asyncpg.Connection,
    tenants: str | list[str] | None,
    of: Resource | None,
    user: str | None,
) -> None:
    if sum(x is not None for x in (tenants, of, user)) != 1:
        raise TypeError("scope a transaction by exactly one of tenants, of, user")
    if tenants is not None:
        await db.set_tenant(conn, tenants)
    elif of is not None:
        await repo.scope_to(conn, of[0], str(of[1]))
    else:
        assert user is not None
        await repo.scope_to_user(conn, user)


def _state(request: Request) -> State:
    state: State = request.app.state.ctx
    return state


async def get_db(request: Request) -> Database:
    return Database(_state(request).pool)


async def get_invite_links(request: Request) -> InviteLinks:
    links: InviteLinks = request.app.state.invite_links
    return links


async def get_settings(request: Request) -> Settings:
    settings = _state(request).settings
    assert isinstance(settings, Settings)
    return settings


Db = Annotated[Database, Depends(get_db)]
AppSettings = Annotated[Settings, Depends(get_settings)]
Links = Annotated[InviteLinks, Depends(get_invite_links)]
Caller = CurrentPrincipal


def idempotent(
    request: Request,
    principal: Principal,
    key: str | None,
    body: BaseModel | None,
    *,
    required: bool = False,
) -> IdempotentRequest | None:
    """The Idempotency-Key of a creating POST, scoped to the caller and the route."""
    return idempotency.for_request(request, principal.sub, key, body, required=required)
