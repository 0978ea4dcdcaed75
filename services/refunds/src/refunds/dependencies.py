"""Dependencies of the refunds API, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from ticketing_shared.auth import CurrentPrincipal
from ticketing_shared.web import State

from .settings import Settings


async def get_pool(request: Request) -> asyncpg.Pool:
    state: State = request.app.state.ctx
    return state.pool


async def get_settings(request: Request) -> Settings:
    state: State = request.app.state.ctx
    assert isinstance(state.settings, Settings)
    return state.settings


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Caller = CurrentPrincipal
AppSettings = Annotated[Settings, Depends(get_settings)]
