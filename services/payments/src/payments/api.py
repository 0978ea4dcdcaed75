"""Payments API process: checkout and provider webhooks. No broker: events go to the outbox."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from ticketing_shared.web import State, create_base_app

from .flows import Flows
from .routes import router
from .settings import Settings
from .webhook_gate import WebhookGate


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the payments API."""
    settings = settings or Settings()

    async def startup(state: State) -> None:
        provider_http = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.provider_timeout_s, connect=3.0)
        )
        state.extra["provider_http"] = provider_http
        state.extra["flows"] = Flows.from_settings(settings, provider_http)
        state.extra["mollie_webhook_gate"] = WebhookGate(
            min_interval_s=settings.mollie_webhook_min_interval_ms / 1000,
            max_ids=settings.mollie_webhook_max_ids,
        )

    async def shutdown(state: State) -> None:
        await state.extra["mollie_webhook_gate"].aclose()
        await state.extra["provider_http"].aclose()

    app = create_base_app(
        settings,
        title="Payments API",
        on_startup=startup,
        on_shutdown=shutdown,
        all_tenants_pool=True,  # the providers' callbacks
    )
    app.include_router(router)
    return app
