"""Dependencies of the orders API, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, Header, Request
from pydantic import BaseModel

from ticketing_shared import idempotency
from ticketing_shared.auth import CurrentPrincipal, Principal
from ticketing_shared.idempotency import IdempotentRequest
from ticketing_shared.web import State

from .settings import Settings


class Database:
    """The one transaction owner of a request: ``async with db.transaction() as conn``."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire() as conn, conn.transaction():
            yield conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """No transaction: for use cases that are one self-committing statement (purchase)."""
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[asyncpg.Connection]:
        """A repeatable-read, read-only transaction: one consistent snapshot for a view."""
        async with (
            self.pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
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
AppSettings = Annotated[Settings, Depends(get_settings)]
Caller = CurrentPrincipal
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


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
