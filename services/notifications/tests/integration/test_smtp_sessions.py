"""The SMTP client against a real SMTP server (the local mail sink): sessions kept between
bursts, and a kept session the server dropped replaced without losing or doubling a mail."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import pytest

from notifications.clients.smtp import Mail, SmtpMailer
from ticketing_local.mailsink import serve

HOST = "127.0.0.1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Sink:
    """The mail sink on fixed ports, which a test can restart (every SMTP session dropped)."""

    def __init__(self) -> None:
        self.smtp_port, self.http_port = _free_port(), _free_port()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        ready = asyncio.Event()
        self.task = asyncio.create_task(
            serve(HOST, self.smtp_port, self.http_port, ready, handle_signals=False)
        )
        await asyncio.wait_for(ready.wait(), timeout=20)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self.task, timeout=20)

    async def received(self, to: str) -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=5) as c:
            r = await c.get(f"http://{HOST}:{self.http_port}/messages", params={"to": to})
            return list(r.json())


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    s = Sink()
    await s.start()
    yield s
    await s.stop()


def _mails(tag: str, n: int) -> list[Mail]:
    return [
        Mail(
            message_id=f"<{tag}-{i}@ticketing.local>",
            to=f"{tag}-{i}@example.test",
            subject=f"Remboursement effectué {i}",
            text="Bonjour, votre remboursement est effectué.",
            html="<p>Bonjour</p>",
        )
        for i in range(n)
    ]


async def _once_each(sink: Sink, mails: list[Mail]) -> None:
    for mail in mails:
        got = await sink.received(mail.to)
        assert len(got) == 1, (mail.to, got)
        assert got[0]["subject"] == mail.subject


async def test_a_second_burst_goes_over_the_session_the_first_one_opened(sink: Sink) -> None:
    mailer = SmtpMailer(host=HOST, port=sink.smtp_port, sender="Tickets <t@ticketing.local>")
    first, second = _mails("burst-a", 2), _mails("burst-b", 3)
    assert await mailer.send_many(first) == [None, None]
    ((kept, _),) = mailer._idle
    assert await mailer.send_many(second) == [None, None, None]
    ((again, _),) = mailer._idle
    assert again is kept  # no second connect and EHLO
    await _once_each(sink, first + second)
    await mailer.close()
    assert not kept.is_connected


async def test_a_kept_session_the_server_dropped_is_replaced_and_nothing_is_doubled(
    sink: Sink,
) -> None:
    mailer = SmtpMailer(host=HOST, port=sink.smtp_port, sender="Tickets <t@ticketing.local>")
    before = _mails("drop-before", 1)
    assert await mailer.send_many(before) == [None]
    ((stale, _),) = mailer._idle
    await sink.stop()  # the server goes away with every session (a restart, an idle timeout)
    await sink.start()
    after = _mails("drop-after", 2)
    assert await mailer.send_many(after) == [None, None]
    ((fresh, _),) = mailer._idle
    assert fresh is not stale
    await _once_each(sink, after)
    await mailer.close()


async def test_a_session_idle_too_long_is_not_reused(sink: Sink) -> None:
    mailer = SmtpMailer(
        host=HOST, port=sink.smtp_port, sender="Tickets <t@ticketing.local>", max_idle_s=0.0
    )
    assert await mailer.send_many(_mails("idle-a", 1)) == [None]
    ((old, _),) = mailer._idle
    assert await mailer.send_many(_mails("idle-b", 1)) == [None]
    ((new, _),) = mailer._idle
    assert new is not old and not old.is_connected
    await mailer.close()


async def test_no_server_fails_the_burst_for_a_retry_and_keeps_nothing() -> None:
    mailer = SmtpMailer(host=HOST, port=_free_port(), sender="t@ticketing.local", timeout=2)
    results = await mailer.send_many(_mails("down", 2))
    assert all(r is not None and not r.permanent for r in results)  # type: ignore[union-attr]
    assert mailer._idle == []
