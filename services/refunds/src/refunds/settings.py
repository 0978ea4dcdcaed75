"""Settings of the refunds service (environment variables prefixed ``REFUNDS_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REFUNDS_", extra="ignore", populate_by_name=True)

    service_name: str = "refunds"
    # the runtime role (never a superuser nor the tables' owner: row-level security binds it)
    database_url: str = "postgresql://refunds@127.0.0.1:55432/refunds"
    api_port: int = 8003
    worker_port: int = 8013
    # a refund for an order refunds has not learned yet (orders.events is ~30 ms behind the
    # purchase) waits this long after the order's creation before answering 404 ...
    order_wait_ms: int = Field(2000, ge=0, le=30_000)
    # ... and one for an order it knows unpaid waits this long to hear of its payment before
    # answering 409 order_not_refundable (the organizer may have just seen it PAID)
    paid_wait_ms: int = Field(1000, ge=0, le=30_000)
