"""The orders service as real processes (api + worker) on a fresh database and a private broker."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from ticketing_local.embedded import free_port
from ticketing_local.testing import ServiceProcess, publish_event, wait_until
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.auth import Principal, mint_token
from ticketing_shared.contracts import EventData

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


async def seed_ticket_type(
    pool: asyncpg.Pool, tenant: str, *, max_quantity: int, tiers: dict[int, int]
) -> tuple[asyncpg.Record, asyncpg.Record]:
    """(event, ticket type): an event three days ahead with one ticket type, written through the
    catalog use cases by the tenant's admin (for tests that drive the use cases directly)."""
    from orders.schemas import EventCreate, TicketTypeCreate
    from orders.service import catalog

    admin = Principal(sub="admin", roles={tenant: "admin"})
    async with db.transaction(pool, tenant_id=tenant) as conn:
        event = await catalog.create_event(
            conn,
            admin,
            tenant,
            EventCreate(title="x", starts_at=datetime.now(UTC) + timedelta(days=3), currency="EUR"),
        )
        tt = await catalog.create_ticket_type(
            conn,
            admin,
            event["id"],
            TicketTypeCreate(
                name="t",
                max_quantity=max_quantity,
                price_tiers=[{"quantity": q, "total_amount": a} for q, a in tiers.items()],
            ),
        )
    return event, tt


@dataclass
class OrdersService:
    api: ServiceProcess
    worker: ServiceProcess
    pool: asyncpg.Pool
    bootstrap: str
    private_key: str
    producer: AIOKafkaProducer
    role_dsn: str  # what the service connects as (row-level security applies)
    tenant: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")

    def token(
        self, sub: str, role: str | None = None, *, tenant: str | None = None, **claims: Any
    ) -> str:
        roles = {tenant or self.tenant: role} if role else {}
        return mint_token(
            self.private_key, sub=sub, email=f"{sub}@example.test", roles=roles, **claims
        )

    def client(
        self, sub: str = "buyer", role: str | None = None, **claims: Any
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api.url,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token(sub, role, **claims)}"},
        )

    async def publish(self, event: EventData, subject: str | uuid.UUID) -> uuid.UUID:
        """Publish an event as its owning service would (e.g. payments' payment.succeeded)."""
        return await publish_event(self.producer, event, subject)

    async def outbox(self, ce_type: str, subject: uuid.UUID | str) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT data FROM outbox WHERE ce_type = $1 AND ce_subject = $2 ORDER BY id",
            ce_type,
            str(subject),
        )
        return [r["data"] for r in rows]

    async def wait_order_status(
        self, client: httpx.AsyncClient, order_id: Any, status: str, timeout: float = 30
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = (await client.get(f"/v1/orders/{order_id}")).json()
            return body if body.get("status") == status else None

        return await wait_until(probe, timeout=timeout, message=f"order {order_id} {status}")

    async def check_inventory_invariant(self) -> None:
        from orders.repository import inventory_report

        async with self.pool.acquire() as conn:
            for row in await inventory_report(conn):
                assert row["current_quantity"] == row["expected"], dict(row)
                assert 0 <= row["current_quantity"] <= row["max_quantity"], dict(row)

    # ---------------------------------------------------------------- catalog shortcuts
    async def event(
        self,
        admin: httpx.AsyncClient,
        *,
        require_approval: bool = False,
        currency: str = "EUR",
        starts_in: timedelta = timedelta(days=30),
    ) -> dict[str, Any]:
        resp = await admin.post(
            f"/v1/tenants/{self.tenant}/events",
            json={
                "title": "Gala",
                "starts_at": (datetime.now(UTC) + starts_in).isoformat(),
                "require_approval": require_approval,
                "currency": currency,
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()

    async def ticket_type(
        self,
        admin: httpx.AsyncClient,
        event_id: str,
        *,
        max_quantity: int = 10,
        tiers: dict[int, int] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        tiers = tiers if tiers is not None else {1: 1500, 2: 2800, 3: 4000}
        resp = await admin.post(
            f"/v1/events/{event_id}/ticket-types",
            json={
                "name": "Standard",
                "max_quantity": max_quantity,
                "price_tiers": [{"quantity": q, "total_amount": a} for q, a in tiers.items()],
                **extra,
            },
        )
        assert resp.status_code == 201, resp.text
        return resp.json()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def orders_service(
    infra: Infra, jwt_keys: dict[str, Any], work_dir: Path
) -> AsyncIterator[OrdersService]:
    broker = infra.new_broker() if infra.kind == "embedded" else None
    bootstrap = broker.bootstrap if broker else infra.bootstrap
    dsn = await infra.fresh_database(
        "orders", db.shared_migrations() + db.dir_migrations("orders", MIGRATIONS)
    )
    env = {
        "APP_ENV": "test",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "JWT_PUBLIC_KEY_FILE": jwt_keys["public_file"],
        "ORDERS_DATABASE_URL": dsn,
        "ORDERS_EXPIRY_INTERVAL_S": "0.2",
        "CONSUMER_BACKOFF_MS": "20",
        "ORDERS_DB_POOL_MAX": "30",
        "INVITE_SECRET": secrets.token_hex(32),  # made at run time, like every key
    }
    api_port, worker_port = free_port(), free_port()
    logs = work_dir / "logs"
    api = ServiceProcess(
        "orders",
        "api",
        env={**env, "ORDERS_API_PORT": str(api_port)},
        port=api_port,
        log_dir=logs,
        name=f"orders-api-{api_port}",
    ).start()
    worker = ServiceProcess(
        "orders",
        "worker",
        env={**env, "ORDERS_WORKER_PORT": str(worker_port)},
        port=worker_port,
        log_dir=logs,
        name=f"orders-worker-{worker_port}",
    ).start()
    # the tests' own reads (outbox, inventory checks, time travel) go past row-level security
    pool = await db.create_pool(infra.admin_dsn(dsn), min_size=1, max_size=5)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", value_serializer=None, key_serializer=None
    )
    try:
        await api.wait_ready()
        await worker.wait_ready()
        await producer.start()
        yield OrdersService(
            api, worker, pool, bootstrap, jwt_keys["private_pem"], producer, role_dsn=dsn
        )
    finally:
        await producer.stop()
        api.stop()
        worker.stop()
        await pool.close()
        if broker is not None:
            broker.stop()


def dumps(value: Any) -> str:
    return json.dumps(value, default=str)
