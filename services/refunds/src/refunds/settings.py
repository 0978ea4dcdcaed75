"""Settings of the refunds service (environment variables prefixed ``REFUNDS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REFUNDS_", extra="ignore", populate_by_name=True)

    service_name: str = "refunds"
    # the runtime role (never a superuser nor the tables' owner: row-level security binds it)
    database_url: str = "postgresql://refunds@127.0.0.1:55432/refunds"
    api_port: int = 8003
    worker_port: int = 8013
