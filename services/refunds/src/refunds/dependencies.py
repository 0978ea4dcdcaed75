"""Dependencies of the refunds API, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from ticketing_shared.auth import CurrentPrincipal
from ticketing_shared.web import State


async def get_pool(request: Request) -> asyncpg.Pool:
    state: State = request.app.state.ctx
    return state.pool


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Caller = CurrentPrincipal
