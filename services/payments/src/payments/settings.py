"""Settings of the payments service (environment variables prefixed ``PAYMENTS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", extra="ignore", populate_by_name=True)

    service_name: str = "payments"
    database_url: str = "postgresql://postgres@127.0.0.1:55432/payments"
    api_port: int = 8002
    worker_port: int = 8012
