"""Tests for the local SMTP mail sink: real SMTP in, real HTTP out, one in-process server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from ticketing_local.mailsink import MailStore, serve

HOST = "127.0.0.1"
TEST_TIMEOUT = 20.0
SRC_DIR = Path(__file__).resolve().parents[1] / "src"

SENDER = "tickets@example.test"
ALICE = "alice@example.test"
BOB = "bob@example.test"
PAID_SUBJECT = "订单已支付 — Bestelling betaald"
PAID_TEXT = "Uw bestelling is betaald. 谢谢!"
PAID_HTML = "<p>Uw bestelling is <b>betaald</b>. 谢谢!</p>"
PLAIN_SUBJECT = "Your tickets"
PLAIN_TEXT = "Here are your tickets."


def free_port() -> int:
    """Return a TCP port that was free on HOST a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class Sink:
    smtp_port: int
    http: httpx.AsyncClient


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    smtp_port, http_port = free_port(), free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(HOST, smtp_port, http_port, ready, handle_signals=False))
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=TEST_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if task in done:
            task.result()  # surface the startup error
            pytest.fail("mailsink stopped before it was ready")
        if waiter not in done:
            pytest.fail("mailsink did not become ready in time")
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{http_port}", timeout=10) as client:
            yield Sink(smtp_port, client)
    finally:
        waiter.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=TEST_TIMEOUT)


async def send_both(smtp_port: int) -> None:
    paid = EmailMessage()
    paid["From"] = f"Tickets <{SENDER}>"
    paid["To"] = ALICE
    paid["Subject"] = PAID_SUBJECT
    paid.set_content(PAID_TEXT)
    paid.add_alternative(PAID_HTML, subtype="html")
    await aiosmtplib.send(paid, hostname=HOST, port=smtp_port, timeout=10)

    plain = EmailMessage()
    plain["From"] = SENDER
    plain["To"] = BOB
    plain["Subject"] = PLAIN_SUBJECT
    plain.set_content(PLAIN_TEXT)
    await aiosmtplib.send(plain, hostname=HOST, port=smtp_port, timeout=10)


async def test_lists_received_messages(sink: Sink) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await send_both(sink.smtp_port)
        response = await sink.http.get("/messages")

    assert response.status_code == 200
    paid, plain = response.json()
    for message in (paid, plain):
        assert set(message) == {
            "id",
            "to",
            "from",
            "subject",
            "text",
            "html",
            "headers",
            "received_at",
        }
        uuid.UUID(message["id"], version=4)
        assert datetime.fromisoformat(message["received_at"]).utcoffset() is not None
        assert message["from"] == SENDER

    assert paid["to"] == [ALICE]
    assert paid["subject"] == PAID_SUBJECT
    assert paid["text"].rstrip("\n") == PAID_TEXT
    assert paid["html"].rstrip("\n") == PAID_HTML
    assert paid["headers"]["Subject"] == PAID_SUBJECT
    assert paid["headers"]["To"] == ALICE
    assert paid["headers"]["Content-Type"].startswith("multipart/alternative")

    assert plain["to"] == [BOB]
    assert plain["subject"] == PLAIN_SUBJECT
    assert plain["text"].rstrip("\n") == PLAIN_TEXT
    assert plain["html"] is None
    assert paid["id"] != plain["id"]


async def test_filters_by_recipient_and_subject(sink: Sink) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await send_both(sink.smtp_port)
        by_alice = (await sink.http.get("/messages", params={"to": "alice@"})).json()
        by_bob = (await sink.http.get("/messages", params={"to": BOB})).json()
        by_domain = (await sink.http.get("/messages", params={"to": "example.test"})).json()
        by_nobody = (await sink.http.get("/messages", params={"to": "carol@"})).json()
        by_subject = (await sink.http.get("/messages", params={"subject": "Bestelling"})).json()

    assert [m["subject"] for m in by_alice] == [PAID_SUBJECT]
    assert [m["subject"] for m in by_bob] == [PLAIN_SUBJECT]
    assert [m["subject"] for m in by_domain] == [PAID_SUBJECT, PLAIN_SUBJECT]
    assert by_nobody == []
    assert [m["to"] for m in by_subject] == [[ALICE]]


async def test_delete_forgets_everything(sink: Sink) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        await send_both(sink.smtp_port)
        assert len((await sink.http.get("/messages")).json()) == 2
        deleted = await sink.http.delete("/messages")
        after = await sink.http.get("/messages")
        health = await sink.http.get("/healthz")

    assert deleted.status_code == 204
    assert after.json() == []
    assert health.json() == {"status": "ok"}


def test_store_keeps_only_the_newest() -> None:
    store = MailStore(max_messages=3)
    for i in range(5):
        store.add({"to": [f"u{i}@example.test"], "subject": str(i)})
    assert [m["subject"] for m in store.list()] == ["2", "3", "4"]


async def test_cli_reads_env_ports_and_stops_on_sigterm() -> None:
    smtp_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "MAILSINK_SMTP_PORT": str(smtp_port),
        "MAILSINK_HTTP_PORT": str(http_port),
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(SRC_DIR), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ticketing_local.mailsink",
        "--host",
        HOST,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(TEST_TIMEOUT):
            while b"mailsink listening" not in (line := await proc.stderr.readline()):
                assert line, "mailsink exited before it was ready"
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{http_port}") as client:
                assert (await client.get("/healthz")).json() == {"status": "ok"}
            proc.send_signal(signal.SIGTERM)
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, stderr.decode(errors="replace")
    assert b"mailsink stopped" in stderr
