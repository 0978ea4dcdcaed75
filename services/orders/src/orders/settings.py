"""Settings of the orders service (environment variables prefixed ``ORDERS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore", populate_by_name=True)

    service_name: str = "orders"
    database_url: str = "postgresql://postgres@127.0.0.1:55432/orders"
    api_port: int = 8001
    worker_port: int = 8011
