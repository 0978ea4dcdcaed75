"""The refunds service as real processes (api + worker) on a fresh database and a private broker.

The tests play the other services: they publish orders' and payments' events on the real broker
and read what refunds publishes from its outbox.
"""

from __future__ import annotations

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
from ticketing_shared.auth import mint_token
from ticketing_shared.contracts import EventData, OrderCreated, OrderPaid, SeatInfo

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


@dataclass
class PaidOrder:
    id: uuid.UUID
    tenant: str
    total: int
    seats: list[uuid.UUID]
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class RefundsService:
    api: ServiceProcess
    worker: ServiceProcess
    admin: asyncpg.Pool  # the superuser: sees every row (row-level security does not bind it)
    app_dsn: str  # the service's own role: row-level security applies
    private_key: str
    producer: AIOKafkaProducer
    tenant: str = field(default_factory=lambda: f"t-{uuid.uuid4().hex[:8]}")

    def client(
        self,
        sub: str = "owner",
        role: str | None = "owner",
        *,
        tenant: str | None = None,
        **claims: Any,
    ) -> httpx.AsyncClient:
        roles = {tenant or self.tenant: role} if role else {}
        token = mint_token(
            self.private_key, sub=sub, email=f"{sub}@example.test", roles=roles, **claims
        )
        return httpx.AsyncClient(
            base_url=self.api.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    async def publish(self, event: EventData, subject: str | uuid.UUID) -> uuid.UUID:
        return await publish_event(self.producer, event, subject)

    async def paid_order(
        self, *, quantity: int = 3, total: int = 4000, tenant: str | None = None, paid: bool = True
    ) -> PaidOrder:
        """An order as orders announces it (created, then paid), once the read model has it."""
        tenant = tenant or self.tenant
        order = PaidOrder(uuid.uuid4(), tenant, total, [uuid.uuid4() for _ in range(quantity)])
        await self.publish(
            OrderCreated(
                order_id=order.id,
                tenant_id=tenant,
                event_id=order.event_id,
                ticket_type_id=uuid.uuid4(),
                buyer_id="buyer",
                buyer_email="buyer@example.test",
                buyer_locale="nl",
                quantity=quantity,
                total_amount=total,
                currency="EUR",
                expires_at=datetime.now(UTC) + timedelta(minutes=30),
                event_title="Gala",
                seats=[SeatInfo(seat_id=s) for s in order.seats],
            ),
            order.id,
        )
        if paid:
            await self.publish(
                OrderPaid(
                    order_id=order.id,
                    tenant_id=tenant,
                    buyer_id="buyer",
                    buyer_email="buyer@example.test",
                    quantity=quantity,
                    total_amount=total,
                    currency="EUR",
                    transaction_id=f"tx-{order.id.hex[:8]}",
                    paid_at=datetime.now(UTC),
                ),
                order.id,
            )
        want = "PAID" if paid else "PENDING"
        await wait_until(
            lambda: self.admin.fetchval(
                "SELECT status = $2 FROM orders_view WHERE order_id = $1", order.id, want
            ),
            timeout=20,
            message=f"order {order.id} {want} in the read model",
        )
        return order

    async def outbox(self, ce_type: str, subject: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.admin.fetch(
            "SELECT data FROM outbox WHERE ce_type = $1 AND ce_subject = $2 ORDER BY id",
            ce_type,
            str(subject),
        )
        return [r["data"] for r in rows]

    async def wait_refund(
        self, refund_id: str, status: str, *, timeout: float = 20
    ) -> dict[str, Any]:
        async with self.client() as c:

            async def probe() -> dict[str, Any] | None:
                body = (await c.get(f"/v1/refunds/{refund_id}")).json()
                return body if body.get("status") == status else None

            return await wait_until(probe, timeout=timeout, message=f"refund {refund_id} {status}")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def refunds_service(
    infra: Infra, jwt_keys: dict[str, Any], work_dir: Path
) -> AsyncIterator[RefundsService]:
    broker = infra.new_broker() if infra.kind == "embedded" else None
    bootstrap = broker.bootstrap if broker else infra.bootstrap
    dsn = await infra.fresh_database(
        "refunds", db.shared_migrations() + db.dir_migrations("refunds", MIGRATIONS)
    )
    env = {
        "APP_ENV": "test",
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "JWT_PUBLIC_KEY_FILE": jwt_keys["public_file"],
        "REFUNDS_DATABASE_URL": dsn,
        "CONSUMER_BACKOFF_MS": "20",
        "REFUNDS_DB_POOL_MAX": "25",
    }
    logs = work_dir / "logs"
    api_port, worker_port = free_port(), free_port()
    api = ServiceProcess(
        "refunds",
        "api",
        env={**env, "REFUNDS_API_PORT": str(api_port)},
        port=api_port,
        log_dir=logs,
        name=f"refunds-api-{api_port}",
    ).start()
    worker = ServiceProcess(
        "refunds",
        "worker",
        env={**env, "REFUNDS_WORKER_PORT": str(worker_port)},
        port=worker_port,
        log_dir=logs,
        name=f"refunds-worker-{worker_port}",
    ).start()
    admin = await db.create_pool(infra.dsn(dsn.rsplit("/", 1)[1]), min_size=1, max_size=4)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        await api.wait_ready()
        await worker.wait_ready()
        await producer.start()
        yield RefundsService(api, worker, admin, dsn, jwt_keys["private_pem"], producer)
    finally:
        await producer.stop()
        api.stop()
        worker.stop()
        await admin.close()
        if broker is not None:
            broker.stop()
