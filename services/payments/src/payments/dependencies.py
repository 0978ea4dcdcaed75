"""Dependencies of the payments API, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from ticketing_shared.auth import CurrentPrincipal
from ticketing_shared.web import State

from .flows import Flows
from .settings import Settings
from .webhook_gate import WebhookGate


def _state(request: Request) -> State:
    state: State = request.app.state.ctx
    return state


async def get_pool(request: Request) -> asyncpg.Pool:
    return _state(request).pool


async def get_all_tenants_pool(request: Request) -> asyncpg.Pool:
    """Connections scoped to all tenants: for provider callbacks only, which find their rows by
    the provider's reference (verified by the provider's signature, or fetched from its API)."""
    pool = _state(request).all_tenants_pool
    assert pool is not None
    return pool


async def get_flows(request: Request) -> Flows:
    flows: Flows = _state(request).extra["flows"]
    return flows


async def get_mollie_webhook_gate(request: Request) -> WebhookGate:
    gate: WebhookGate = _state(request).extra["mollie_webhook_gate"]
    return gate


async def get_settings(request: Request) -> Settings:
    settings = _state(request).settings
    assert isinstance(settings, Settings)
    return settings


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
AllTenantsPool = Annotated[asyncpg.Pool, Depends(get_all_tenants_pool)]
PaymentFlows = Annotated[Flows, Depends(get_flows)]
AppSettings = Annotated[Settings, Depends(get_settings)]
MollieWebhookGate = Annotated[WebhookGate, Depends(get_mollie_webhook_gate)]
Caller = CurrentPrincipal
