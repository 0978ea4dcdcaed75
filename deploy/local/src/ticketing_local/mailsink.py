"""Local SMTP mail sink: a real SMTP server that keeps received mail and lists it over HTTP.

The local stack points the notification service at this sink instead of a real mail relay.
One process runs one asyncio loop holding two listeners:

* an aiosmtpd ``SMTP`` server (no ``Controller`` thread) that accepts every message and stores
  it in memory (at most 10,000, oldest dropped), parsed with the stdlib ``email`` package when
  first listed;
* a Starlette app served by uvicorn, for tests to inspect the mail:

  - ``GET /messages`` lists stored messages in arrival order, optionally filtered with
    ``?to=`` (case-insensitive substring of any envelope recipient) and ``?subject=``
    (case-insensitive substring of the decoded subject);
  - ``DELETE /messages`` forgets every message (204);
  - ``GET /healthz`` answers ``{"status": "ok"}``.

Each stored message is ``{id, to, from, subject, text, html, headers, received_at}``; ``text``
and ``html`` are the decoded text/plain and text/html bodies (CRLF turned into ``\n``) or null.

Run it with ``python -m ticketing_local.mailsink --host 127.0.0.1 --smtp-port 1025
--http-port 8103`` (ports also from ``MAILSINK_SMTP_PORT`` / ``MAILSINK_HTTP_PORT``), or
in-process with :func:`serve`. SIGTERM and SIGINT shut it down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import logging
import os
import socket
import uuid
import weakref
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["MailSinkHandler", "MailStore", "create_app", "main", "parse_message", "serve"]

from .serving import serve_app

log = logging.getLogger("ticketing_local.mailsink")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_SMTP_PORT = 1025
DEFAULT_HTTP_PORT = 8103
MAX_MESSAGES = 10_000
DATA_SIZE_LIMIT = 10 * 1024 * 1024

Message = dict[str, Any]


class _Received:
    """A message as it arrived; parsed on first read, not in the SMTP session (a burst of mail
    costs the sink what a real relay would: receiving, not MIME parsing)."""

    __slots__ = ("content", "mail_from", "parsed", "rcpt_tos", "received_at")

    def __init__(self, content: bytes, mail_from: str, rcpt_tos: list[str]) -> None:
        self.content = content
        self.mail_from = mail_from
        self.rcpt_tos = rcpt_tos
        self.received_at = _rfc3339_now()
        self.parsed: Message | None = None

    def message(self) -> Message:
        if self.parsed is None:
            self.parsed = parse_message(self.content, self.mail_from, self.rcpt_tos)
            self.parsed["received_at"] = self.received_at
            self.content = b""
        return self.parsed


class MailStore:
    """In-memory, bounded, arrival-ordered store of received messages."""

    def __init__(self, max_messages: int = MAX_MESSAGES) -> None:
        """Create an empty store keeping at most ``max_messages`` (oldest dropped first)."""
        self._messages: deque[_Received | Message] = deque(maxlen=max_messages)

    def add(self, message: Message) -> None:
        """Append one parsed message, dropping the oldest when full."""
        self._messages.append(message)

    def receive(self, content: bytes, mail_from: str, rcpt_tos: list[str]) -> None:
        """Append one message as received (parsed when first listed)."""
        self._messages.append(_Received(content, mail_from, rcpt_tos))

    def clear(self) -> None:
        """Forget every message."""
        self._messages.clear()

    def list(self, to: str | None = None, subject: str | None = None) -> list[Message]:
        """Return messages in arrival order, filtered by recipient and subject substrings."""
        to_needle = to.casefold() if to else None
        subject_needle = subject.casefold() if subject else None
        out = []
        for item in self._messages:
            recipients = item.rcpt_tos if isinstance(item, _Received) else item["to"]
            if to_needle is not None and not any(to_needle in r.casefold() for r in recipients):
                continue
            m = item.message() if isinstance(item, _Received) else item
            if subject_needle is None or subject_needle in m["subject"].casefold():
                out.append(m)
        return out

    def __len__(self) -> int:
        """Return how many messages are stored."""
        return len(self._messages)


def _rfc3339_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _part_content(msg: EmailMessage, subtype: str) -> str | None:
    """Return the decoded body part of MIME type text/<subtype>, or None."""
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:  # malformed MIME structure: report no such part
        return None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # unknown charset or broken transfer encoding
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            return None
        content = payload.decode("utf-8", errors="replace")
    if not isinstance(content, str):
        return None
    return content.replace("\r\n", "\n")  # SMTP line endings back to Python newlines


def _header_value(msg: EmailMessage, name: str, raw: Any) -> str:
    try:
        return str(raw)
    except Exception:  # a header the default policy cannot render: fall back to raw text
        return str(msg.get_all(name, [""])[-1])


def parse_message(content: bytes, mail_from: str, rcpt_tos: Sequence[str]) -> Message:
    """Parse raw RFC 5322 bytes plus the SMTP envelope into the stored message dict."""
    msg = email.message_from_bytes(content, policy=email.policy.default)
    headers: dict[str, str] = {}
    for name, value in msg.items():
        headers[name] = _header_value(msg, name, value)  # last one wins
    subject = msg.get("subject")
    return {
        "id": str(uuid.uuid4()),
        "to": list(rcpt_tos),
        "from": mail_from,
        "subject": "" if subject is None else _header_value(msg, "subject", subject),
        "text": _part_content(msg, "plain"),
        "html": _part_content(msg, "html"),
        "headers": headers,
        "received_at": _rfc3339_now(),
    }


class MailSinkHandler:
    """aiosmtpd handler that stores every message it is given."""

    def __init__(self, store: MailStore) -> None:
        """Store accepted messages in ``store``."""
        self.store = store

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message (parsed when first listed); always accept it."""
        content = envelope.content
        if isinstance(content, str):  # only when decode_data=True; keep bytes semantics
            content = content.encode("utf-8", errors="surrogateescape")
        self.store.receive(content or b"", envelope.mail_from or "", list(envelope.rcpt_tos))
        log.debug("stored mail to=%s", envelope.rcpt_tos)
        return "250 Message accepted for delivery"


def create_app(store: MailStore) -> Starlette:
    """Build the Starlette app that lists and clears the messages in ``store``."""

    async def list_messages(request: Request) -> Response:
        params = request.query_params
        return JSONResponse(store.list(to=params.get("to"), subject=params.get("subject")))

    async def delete_messages(request: Request) -> Response:
        store.clear()
        return Response(status_code=204)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/messages", list_messages, methods=["GET"]),
            Route("/messages", delete_messages, methods=["DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.store = store
    return app


async def serve(
    host: str = DEFAULT_HOST,
    smtp_port: int = DEFAULT_SMTP_PORT,
    http_port: int = DEFAULT_HTTP_PORT,
    ready: asyncio.Event | None = None,
    *,
    handle_signals: bool = True,
) -> None:
    """Run the SMTP sink and its HTTP API on the current loop until signalled or cancelled."""
    loop = asyncio.get_running_loop()
    store = MailStore()
    handler = MailSinkHandler(store)
    hostname = socket.gethostname()  # aiosmtpd would otherwise call getfqdn() per connection
    sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def smtp_factory() -> SMTP:
        protocol = SMTP(
            handler,
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=hostname,
            loop=loop,
        )
        sessions.add(protocol)
        return protocol

    smtp_server = await loop.create_server(smtp_factory, host=host, port=smtp_port)

    async def close_smtp() -> None:
        smtp_server.close()
        for session in list(sessions):
            if session.transport is not None:
                session.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(smtp_server.wait_closed(), timeout=5)

    smtp_addr = smtp_server.sockets[0].getsockname()
    await serve_app(
        create_app(store),
        host,
        http_port,
        name="mailsink",
        logger=log,
        ready=ready,
        handle_signals=handle_signals,
        listening_note=f" (smtp {smtp_addr[0]}:{smtp_addr[1]})",
        aclose=close_smtp,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse command-line options and run the mail sink until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m ticketing_local.mailsink",
        description="Local SMTP sink that stores received mail and lists it over HTTP.",
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default %(default)s)"
    )
    parser.add_argument(
        "--smtp-port",
        type=int,
        default=int(os.environ.get("MAILSINK_SMTP_PORT", DEFAULT_SMTP_PORT)),
        help="SMTP port (env MAILSINK_SMTP_PORT, default %(default)s)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=int(os.environ.get("MAILSINK_HTTP_PORT", DEFAULT_HTTP_PORT)),
        help="HTTP API port (env MAILSINK_HTTP_PORT, default %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command
    asyncio.run(serve(args.host, args.smtp_port, args.http_port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
