"""Settings of the orders service (environment variables prefixed ``ORDERS_``)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", populate_by_name=True)

    service_name: str = "orders"
    # the runtime role (never a superuser nor the tables' owner: row-level security binds it)
    database_url: str = "postgresql://orders@127.0.0.1:55432/orders"
    api_port: int = 8001
    worker_port: int = 8011
    # all opened at start: a flash sale must not wait for connections to be made
    db_pool_min: int = 20
    db_pool_max: int = 20
    # how long an unpaid order holds its seats (ORDER_TTL_SECONDS, default 30 min)
    order_ttl_seconds: int = Field(
        1800, ge=1, validation_alias=AliasChoices("ORDER_TTL_SECONDS", "order_ttl_seconds")
    )
    expiry_interval_s: float = 1.0
    expiry_batch: int = 200
    max_quantity_per_order: int = 50

    @property
    def order_ttl(self) -> timedelta:
        return timedelta(seconds=self.order_ttl_seconds)
