"""Dependencies of the refunds API, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated
from uuid import UUID

import asyncpg
from fastapi import Depends, Request

from ticketing_shared import db
from ticketing_shared.auth import CurrentPrincipal
from ticketing_shared.web import State

from . import repository as repo
from .settings import Settings


class Database:
    """The one transaction owner of a request: ``async with database.transaction(...) as conn``.

    Every transaction is scoped for row-level security before anything else runs in it, by
    exactly one of ``tenants`` (staff use cases: ``principal.tenant_scope()``) or ``order`` (a
    use case on one order, open to its buyer: that order's own tenant)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(
        self, *, tenants: str | list[str] | None = None, order: UUID | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, self.on(conn, tenants=tenants, order=order):
            yield conn

    @staticmethod
    @asynccontextmanager
    async def on(
        conn: asyncpg.Connection,
        *,
        tenants: str | list[str] | None = None,
        order: UUID | None = None,
    ) -> AsyncIterator[asyncpg.Connection]:
        """The same, on a connection the caller holds (a wait that looks again and again)."""
        async with conn.transaction():
            if tenants is not None and order is None:
                await db.set_tenant(conn, tenants)
            elif order is not None and tenants is None:
                await repo.scope_to_order(conn, order)
            else:
                raise TypeError("scope a transaction by exactly one of tenants, order")
            yield conn


def _state(request: Request) -> State:
    state: State = request.app.state.ctx
    return state


async def get_db(request: Request) -> Database:
    return Database(_state(request).pool)


async def get_settings(request: Request) -> Settings:
    settings = _state(request).settings
    assert isinstance(settings, Settings)
    return settings


Db = Annotated[Database, Depends(get_db)]
Caller = CurrentPrincipal
AppSettings = Annotated[Settings, Depends(get_settings)]
