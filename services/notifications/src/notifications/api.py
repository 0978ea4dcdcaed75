"""Notifications API process: health, readiness and metrics (e-mails are driven by events)."""

from __future__ import annotations

from fastapi import FastAPI

from ticketing_shared.web import create_base_app

from .settings import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the notifications API."""
    settings = settings or Settings()
    return create_base_app(settings, title="Notifications API")
