"""Refunds worker process: consumers and the outbox relay."""

from __future__ import annotations

from starlette.applications import Starlette

from ticketing_shared.worker import create_worker as create_base_worker

from .consumers import build_consumer
from .settings import Settings


def create_worker(settings: Settings | None = None) -> Starlette:
    """Build the refunds worker."""
    settings = settings or Settings()
    return create_base_worker(settings, consumers=[build_consumer(settings)])
