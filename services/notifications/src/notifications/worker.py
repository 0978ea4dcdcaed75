"""Notifications worker: event consumers and the SMTP sender."""

from __future__ import annotations

from starlette.applications import Starlette

from ticketing_shared.worker import WorkerContext
from ticketing_shared.worker import create_worker as create_base_worker

from .clients.smtp import SmtpMailer
from .consumers import build_consumer
from .service import Sender
from .settings import Settings


def create_worker(settings: Settings | None = None) -> Starlette:
    """Build the notifications worker."""
    settings = settings or Settings()
    consumer = build_consumer(settings)
    mailer = SmtpMailer(
        host=settings.smtp_host,
        port=settings.smtp_port,
        sender=settings.mail_from,
        username=settings.smtp_username,
        password=settings.smtp_password,
        start_tls=settings.smtp_starttls,
        timeout=settings.smtp_timeout_s,
    )
    sender = Sender(
        mailer,
        links=settings.invite_links(),  # the tokens of the invite links in the mails it sends
        batch=settings.sender_batch,
        max_attempts=settings.delivery_max_attempts,
        backoff_s=settings.delivery_backoff_s,
        idle_poll_s=settings.sender_idle_poll_s,
        concurrency=settings.sender_concurrency,
    )
    consumer.after_commit.append(sender.wake)

    async def send_emails(ctx: WorkerContext) -> None:
        """Deliver queued e-mails over SMTP with retries and backoff."""
        await sender.run(ctx.all_tenants_pool, ctx.stopping)

    async def close_sessions(ctx: WorkerContext) -> None:
        await mailer.close()

    return create_base_worker(
        settings, consumers=[consumer], schedulers=[send_emails], on_shutdown=close_sessions
    )
