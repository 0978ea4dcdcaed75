"""Payments worker process: consumers, the outbox relay and schedulers."""

from __future__ import annotations

from starlette.applications import Starlette

from ticketing_shared.worker import create_worker as create_base_worker

from .settings import Settings


def create_worker(settings: Settings | None = None) -> Starlette:
    """Build the payments worker."""
    settings = settings or Settings()
    return create_base_worker(settings)
