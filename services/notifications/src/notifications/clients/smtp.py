"""SMTP delivery with aiosmtplib."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from email.charset import BASE64, QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formatdate, parseaddr

import aiosmtplib


class DeliveryError(Exception):
    """The SMTP server refused or could not be reached; ``permanent`` for 5xx refusals."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Mail:
    message_id: str
    to: str
    subject: str
    text: str
    html: str | None


class SmtpMailer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        start_tls: bool = False,
        timeout: float = 10.0,
        max_idle_s: float = 30.0,
    ) -> None:
        self.host, self.port, self.sender = host, port, sender
        # open sessions between bursts, kept at most ``max_idle_s`` (servers drop idle ones)
        self.max_idle_s = max_idle_s
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self.username, self.password = username, password
        self.start_tls, self.timeout = start_tls, timeout
        # our name in EHLO: looked up once (aiosmtplib would resolve it, in a thread, per session)
        self._local_hostname: str | None = None
        self._envelope_from = parseaddr(sender)[1] or sender

    def _message(self, mail: Mail) -> bytes:
        """The RFC 5322 bytes of ``mail``: UTF-8 bodies in quoted-printable, RFC 2047 headers.

        Built with the stdlib's compat32 MIME classes: a third of the CPU of ``EmailMessage``
        and its header registry, for the same message (which matters at a hundred mails/s)."""
        msg: MIMEMultipart | MIMENonMultipart = _text_part(mail.text, "plain")
        if mail.html:
            msg = MIMEMultipart("alternative", _subparts=[msg, _text_part(mail.html, "html")])
        # no header injection: a line break in a value never starts a header of its own
        subject = " ".join(mail.subject.splitlines())
        msg["From"] = self.sender
        msg["To"] = " ".join(mail.to.splitlines())
        msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8").encode()
        msg["Date"] = formatdate(usegmt=True)
        # A stable Message-ID per delivery: a resend after a crash is recognisable as the same mail.
        msg["Message-ID"] = mail.message_id
        return msg.as_bytes()

    async def send(self, mail: Mail) -> None:
        (result,) = await self.send_many([mail])
        if result is not None:
            raise result

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            timeout=self.timeout,
            start_tls=self.start_tls,
            local_hostname=self._local_hostname,
        )
        await client.connect()
        if self.username and self.password:
            await client.login(self.username, self.password)
        return client

    def _checkout(self) -> aiosmtplib.SMTP | None:
        """An open session left by an earlier burst, if one is still fresh."""
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and time.monotonic() - since < self.max_idle_s:
                return client
            self._discard(client)
        return None

    @staticmethod
    def _discard(client: aiosmtplib.SMTP) -> None:
        if client.is_connected:
            client.close()

    async def close(self) -> None:
        """QUIT the open sessions (at shutdown)."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                self._discard(client)

    async def send_many(self, mails: list[Mail]) -> list[DeliveryError | None]:
        """Send over ONE SMTP session (a transaction per mail), kept open for the next burst: a
        burst of mail costs no handshake when a session is open, one otherwise. Returns each
        mail's outcome (None = accepted); a refusal fails only its mail, a broken session fails
        the mails not yet accepted. A kept session the server closed meanwhile is replaced once,
        before anything is sent on it."""
        results: list[DeliveryError | None] = [
            DeliveryError("not attempted: the SMTP session failed") for _ in mails
        ]
        client = self._checkout()
        reused = client is not None
        healthy = False
        try:
            if client is None:
                client = await self._connect()
            i = 0
            while i < len(mails):
                mail = mails[i]
                try:
                    await client.sendmail(self._envelope_from, [mail.to], self._message(mail))
                    results[i] = None
                except aiosmtplib.SMTPServerDisconnected:
                    if not (reused and i == 0):
                        raise
                    self._discard(client)  # went stale while kept: once more, on a new session
                    client, reused = await self._connect(), False
                    continue
                except aiosmtplib.SMTPResponseException as exc:
                    results[i] = DeliveryError(
                        f"{exc.code} {exc.message}", permanent=500 <= exc.code < 600
                    )
                    if exc.code in (421, 451) or not client.is_connected:
                        break
                    await client.rset()
                except aiosmtplib.SMTPRecipientsRefused as exc:
                    codes = [r.code for r in exc.recipients]
                    results[i] = DeliveryError(
                        repr(exc), permanent=all(500 <= c < 600 for c in codes)
                    )
                    await client.rset()
                i += 1
            else:
                healthy = True
        except aiosmtplib.SMTPResponseException as exc:
            failure = DeliveryError(f"{exc.code} {exc.message}", permanent=False)
            results = [r if r is None else failure for r in results]
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            failure = DeliveryError(repr(exc))
            results = [r if r is None else failure for r in results]
        finally:
            if client is not None:
                if healthy and client.is_connected:
                    self._idle.append((client, time.monotonic()))
                else:
                    self._discard(client)
        return results


_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP
# the HTML part in base64: encoded in C, where quoted-printable is encoded character by character
# in Python (a third of a millisecond per mail); nobody reads an HTML part's source anyway
_UTF8_B64 = Charset("utf-8")
_UTF8_B64.body_encoding = BASE64


def _text_part(text: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(text, charset=_UTF8_B64 if subtype == "html" else _UTF8_QP)
    return part
