"""Settings of the notifications service (environment variables prefixed ``NOTIFICATIONS_``)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from ticketing_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="NOTIFICATIONS_", extra="ignore", populate_by_name=True
    )

    service_name: str = "notifications"
    # the runtime role (never a superuser nor the tables' owner: row-level security binds it)
    database_url: str = "postgresql://notifications@127.0.0.1:55432/notifications"
    api_port: int = 8004
    worker_port: int = 8014
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    mail_from: str = "Ticketing <no-reply@ticketing.local>"
    # where buyers open invite links (the buyer-facing site, not this backend)
    public_base_url: str = "http://127.0.0.1:8080"
    delivery_max_attempts: int = 8
    delivery_backoff_s: float = 1.0
    # mails per SMTP session, and how many sessions run at once
    sender_batch: int = 10
    sender_concurrency: int = 4
    # the sender's loops each hold one (they work for every tenant), and room for the rest
    db_all_tenants_pool_max: int = 6
    # fresh mail wakes the sender at once; the poll only finds retries that came due
    sender_idle_poll_s: float = 0.25
