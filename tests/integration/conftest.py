"""Fixtures for the messaging proofs: fresh databases, a private broker, real worker processes."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest_asyncio

from ticketing_local.embedded import EmbeddedBroker, free_port
from ticketing_local.testing import ServiceProcess
from ticketing_local.testing.plugin import Infra, MailSink
from ticketing_shared import db, outbox
from ticketing_shared.contracts import EventData, OrderPaid

ROOT = Path(__file__).resolve().parents[2]


def service_migrations(service: str) -> list[db.Migration]:
    return db.shared_migrations() + db.dir_migrations(
        service, ROOT / "services" / service / "migrations"
    )


@dataclass
class Messaging:
    infra: Infra
    mailsink: MailSink
    broker: EmbeddedBroker | None
    bootstrap: str
    dsn: dict[str, str]
    base_env: dict[str, str]
    log_dir: Path
    processes: list[ServiceProcess]
    # what the tests look at, as the superuser (every tenant's rows; row-level security would
    # hide them from the services' own role)...
    pools: dict[str, asyncpg.Pool] = field(default_factory=dict)
    # ...and the services' own role, which writes the events
    writers: dict[str, asyncpg.Pool] = field(default_factory=dict)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def env_for(
        self, service: str, port: int, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        up = service.upper()
        return {
            **self.base_env,
            f"{up}_DATABASE_URL": self.dsn[service],
            f"{up}_WORKER_PORT": str(port),
            f"{up}_API_PORT": str(port),
            **(extra or {}),
        }

    async def start(
        self,
        service: str,
        role: str = "worker",
        *,
        extra_env: dict[str, str] | None = None,
        name: str | None = None,
        wait: bool = True,
    ) -> ServiceProcess:
        port = free_port()
        proc = ServiceProcess(
            service,
            role,
            env=self.env_for(service, port, extra_env),
            port=port,
            log_dir=self.log_dir,
            name=name or f"{service}-{role}-{len(self.processes)}",
        ).start()
        self.processes.append(proc)
        if wait:
            await proc.wait_ready()
        return proc

    def cli(self, service: str, *args: str) -> str:
        env = self.env_for(service, free_port())
        out = subprocess.run(
            [sys.executable, "-m", service, *args],
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout

    def recipient(self, n: int | str) -> str:
        return f"buyer-{self.run_id}-{n}@example.test"

    def order_paid(self, n: int | str, order_id: uuid.UUID | None = None) -> OrderPaid:
        return OrderPaid(
            order_id=order_id or uuid.uuid4(),
            tenant_id="t-demo",
            buyer_id=f"user-{n}",
            buyer_email=self.recipient(n),
            buyer_locale="en",
            quantity=1,
            total_amount=1500,
            currency="EUR",
            transaction_id=f"tx-{n}",
            paid_at=datetime.now(UTC),
            event_title="Gala",
        )

    async def emit(
        self, events: list[tuple[EventData, str]], *, service: str = "orders"
    ) -> list[uuid.UUID]:
        """Write events to a service's outbox in ONE transaction (with a business-like write)."""
        pool = self.writers[service]
        tenants = {str(getattr(ev, "tenant_id", "")) for ev, _ in events}
        async with db.transaction(pool, tenant_id=tenants) as conn:
            await conn.execute("INSERT INTO business_touch VALUES (1)")
            return [
                await outbox.emit(conn, ev, subject=subject, source=service)
                for ev, subject in events
            ]

    async def mails(self, to: str | None = None) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as c:
            params = {"to": to or self.run_id}
            resp = await c.get(f"{self.mailsink.url}/messages", params=params)
            resp.raise_for_status()
            return list(resp.json())

    async def metric(self, proc: ServiceProcess, name: str, **labels: str) -> float:
        """Sum of a Prometheus counter's samples matching ``labels`` on a process."""
        async with httpx.AsyncClient(timeout=5) as c:
            text = (await c.get(f"{proc.url}/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            label_text = line[len(name) + 1 : line.index("}")]
            found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


class TcpProxy:
    """A TCP proxy in front of a server that a test can cut (every connection dropped, new ones
    refused) and restore: a database outage for one process, and only that one."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        # connections first: since Python 3.12 wait_closed() waits for every one to end
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    def dsn(self, dsn: str) -> str:
        """``dsn`` with its host and port replaced by the proxy's."""
        return re.sub(r"@[^/]+/", f"@127.0.0.1:{self.port}/", dsn)


@pytest_asyncio.fixture(loop_scope="session")
async def messaging(
    infra: Infra, mailsink: MailSink, jwt_keys: dict[str, Any], work_dir: Path
) -> AsyncIterator[Messaging]:
    broker = infra.new_broker() if infra.kind == "embedded" else None
    bootstrap = broker.bootstrap if broker else infra.bootstrap
    dsn = {
        svc: await infra.fresh_database(svc, service_migrations(svc))
        for svc in ("orders", "notifications")
    }
    base_env = {
        "APP_ENV": "test",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "JWT_PUBLIC_KEY_FILE": jwt_keys["public_file"],
        "NOTIFICATIONS_SMTP_PORT": str(mailsink.smtp_port),
        "CONSUMER_BACKOFF_MS": "20",
        "LOG_LEVEL": "INFO",
        "INVITE_SECRET": secrets.token_hex(32),  # made at run time, like every key
    }
    m = Messaging(infra, mailsink, broker, bootstrap, dsn, base_env, work_dir / "logs", [])
    for svc, d in dsn.items():
        # a stand-in for a business table, written with the events (tables are the owner's)
        owner = await asyncpg.connect(infra.owner_dsn(d))
        try:
            await owner.execute(
                f'CREATE TABLE business_touch (n bigint); GRANT INSERT ON business_touch TO "{db.user_of(d)}"'
            )
        finally:
            await owner.close()
        m.writers[svc] = await db.create_pool(d, min_size=1, max_size=4)
        m.pools[svc] = await db.create_pool(infra.admin_dsn(d), min_size=1, max_size=4)
    try:
        yield m
    finally:
        for p in m.processes:
            p.stop()
        for pool in [*m.pools.values(), *m.writers.values()]:
            await pool.close()
        if broker is not None:
            broker.stop()
