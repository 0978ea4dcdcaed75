"""Orders API process: FastAPI, no broker (state changes write outbox rows)."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_shared.web import create_base_app

from .routes import router
from .service.purchase import PurchaseCatalog
from .settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the orders API."""
    settings = settings or Settings()
    app = create_base_app(settings, title="Orders API")
    app.include_router(router)
    app.state.purchase_catalog = PurchaseCatalog()  # this process's copy of the catalog
    app.state.invite_links = settings.invite_links()  # listing and redeeming invites
    return app
