"""PostgreSQL stops under the four APIs, real processes on a cluster of their own (never the
session's, which every other test shares): whatever a client asks, purchases in flight and
provider webhooks included, the answer is a 503 problem with Retry-After, never a 500, and
/readyz says the database is unavailable. Once PostgreSQL is back, the same processes serve
again, without a restart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.integration.conftest import service_migrations
from tests.wechat import signed_notification
from ticketing_local.embedded import EmbeddedPostgres, free_port
from ticketing_local.keys import ensure_keys
from ticketing_local.testing import ServiceProcess, wait_until
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.auth import mint_token

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVICES = ("orders", "payments", "refunds", "notifications")


@dataclass
class Outage:
    pg: EmbeddedPostgres
    apis: dict[str, ServiceProcess]
    folder: Path  # keys/ inside, laid out as the local stack's
    tenant: str

    def client(self, service: str, sub: str, role: str | None = None) -> httpx.AsyncClient:
        private_key = (self.folder / "keys" / "jwt-private.pem").read_text()
        token = mint_token(private_key, sub=sub, roles={self.tenant: role} if role else {})
        return httpx.AsyncClient(
            base_url=self.apis[service].url,
            timeout=10,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def readiness(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as c:
            answers = await asyncio.gather(*(c.get(f"{p.url}/readyz") for p in self.apis.values()))
        return {name: a.status_code for name, a in zip(self.apis, answers, strict=True)}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def outage(infra: Infra, work_dir: Path) -> AsyncIterator[Outage]:
    folder = work_dir / "database-outage"
    try:
        pg = EmbeddedPostgres(folder / "pg", free_port(), durable=False)
    except FileNotFoundError as exc:  # no PostgreSQL binaries here (--infra=containers)
        pytest.skip(str(exc))
    await asyncio.to_thread(pg.start)
    keys = ensure_keys(folder / "keys")

    async def database(service: str) -> str:
        owner = db.owner_role(service)
        await db.ensure_database(pg.dsn(), service, owner=owner, runtime=service)
        await db.migrate(
            db.role_dsn(pg.dsn(), service, owner), service_migrations(service), runtime_role=service
        )
        return db.role_dsn(pg.dsn(), service, service)

    apis: dict[str, ServiceProcess] = {}
    try:
        dsns = await asyncio.gather(*(database(s) for s in SERVICES))
        common = {
            "APP_ENV": "test",
            "KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,  # /readyz asks for it too
            "JWT_PUBLIC_KEY_FILE": str(keys["jwt_public"]),
            "INVITE_SECRET_FILE": str(keys["invite_secret"]),
            "PAYMENTS_WECHAT_KEYS_DIR": str(folder / "keys"),
            "PAYMENTS_MOLLIE_KEYS_DIR": str(folder / "keys"),
        }
        for service, dsn in zip(SERVICES, dsns, strict=True):
            port = free_port()
            apis[service] = ServiceProcess(
                service,
                "api",
                env={
                    **common,
                    f"{service.upper()}_DATABASE_URL": dsn,
                    f"{service.upper()}_API_PORT": str(port),
                },
                port=port,
                log_dir=work_dir / "logs",
                name=f"{service}-api-outage",
            ).start()
        await asyncio.gather(*(p.wait_ready() for p in apis.values()))
        yield Outage(pg, apis, folder, tenant=f"t-outage-{uuid.uuid4().hex[:6]}")
    finally:
        for p in apis.values():
            p.stop()
        await asyncio.to_thread(pg.destroy)


def _assert_unavailable(resp: httpx.Response, what: str) -> None:
    assert resp.status_code == 503, f"{what}: {resp.status_code} {resp.text}"
    assert resp.headers["content-type"] == "application/problem+json", what
    assert int(resp.headers["retry-after"]) >= 1, what
    assert resp.json()["code"] == "database_unavailable", what


async def test_the_apis_answer_503_while_postgresql_is_down_and_serve_again_once_it_is_back(
    outage: Outage,
) -> None:
    pids = {name: p.proc.pid for name, p in outage.apis.items() if p.proc is not None}
    async with (
        outage.client("orders", "outage-admin", "owner") as admin,
        outage.client("refunds", "outage-admin", "owner") as refunds,
        outage.client("orders", "outage-buyer") as buyer,
        httpx.AsyncClient(base_url=outage.apis["payments"].url, timeout=10) as provider,
    ):
        event = await admin.post(
            f"/v1/tenants/{outage.tenant}/events",
            json={
                "title": "Outage",
                "starts_at": (datetime.now(UTC) + timedelta(days=9)).isoformat(),
                "currency": "CNY",
            },
        )
        assert event.status_code == 201, event.text
        event_id = event.json()["id"]
        ticket_type = await admin.post(
            f"/v1/events/{event_id}/ticket-types",
            json={
                "name": "Standard",
                "max_quantity": 5000,
                "max_unpaid_per_buyer": 5000,
                "price_tiers": [{"quantity": 1, "total_amount": 100}],
            },
        )
        assert ticket_type.status_code == 201, ticket_type.text
        registration = {"ticket_type_id": ticket_type.json()["id"], "quantity": 1}

        def purchase(key: str | None = None) -> Any:
            return buyer.post(
                f"/v1/events/{event_id}/registrations",
                json=registration,
                headers={"Idempotency-Key": key or str(uuid.uuid4())},
            )

        first = await purchase()
        assert first.status_code == 201, first.text
        order_id = first.json()["order"]["id"]

        # Purchases keep coming while PostgreSQL shuts down under them (connections dropped
        # mid-statement, then refused): each is taken or told to come back, none is a 500.
        stopping = asyncio.create_task(asyncio.to_thread(outage.pg.stop))
        answers: list[int] = []

        async def keep_buying() -> None:
            while not stopping.done() or not answers or answers[-1] != 503:
                answers.append((await purchase()).status_code)

        await asyncio.wait_for(asyncio.gather(*(keep_buying() for _ in range(4))), 30)
        await stopping
        assert set(answers) <= {201, 503}, answers
        assert 503 in answers

        # down: every API, every kind of request
        assert await outage.readiness() == dict.fromkeys(SERVICES, 503)
        async with httpx.AsyncClient(timeout=5) as c:
            ready = (await c.get(f"{outage.apis['orders'].url}/readyz")).json()
        assert ready["checks"] == {"database": False, "broker": True}
        retried_key = str(uuid.uuid4())
        _assert_unavailable(await purchase(retried_key), "purchase")
        _assert_unavailable(await buyer.get(f"/v1/orders/{order_id}"), "order")
        _assert_unavailable(await admin.get(f"/v1/events/{event_id}/registrations"), "list")
        _assert_unavailable(await refunds.get(f"/v1/orders/{order_id}/refunds"), "refunds")
        mollie = await provider.post(
            "/v1/webhooks/mollie",
            content=b"id=tr_outage1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        _assert_unavailable(mollie, "Mollie's webhook")  # Mollie calls again later
        body, headers = signed_notification(
            SimpleNamespace(run_dir=outage.folder),  # (only its keys folder is read)
            f"outage-{uuid.uuid4().hex[:8]}",
        )
        wechat = await provider.post("/v1/webhooks/wechatpay", content=body, headers=headers)
        _assert_unavailable(wechat, "WeChat Pay's webhook")  # WeChat Pay notifies again

        # back: the same processes, ready again within a bounded wait, serve as before
        await asyncio.to_thread(outage.pg.start)
        await wait_until(
            lambda: _all_ready(outage), timeout=30, interval=0.1, message="every API ready again"
        )
        assert {n: p.proc.pid for n, p in outage.apis.items() if p.proc is not None} == pids
        assert all(p.exited() is None for p in outage.apis.values())
        again = await purchase(retried_key)  # the refused purchase, tried again
        assert again.status_code == 201, again.text
        # more at once than the pool holds connections: none of them is a dead one
        burst = await asyncio.gather(*(purchase() for _ in range(12)))
        assert {r.status_code for r in burst} == {201}, [r.text for r in burst]
        assert (await buyer.get(f"/v1/orders/{order_id}")).status_code == 200
        assert (await admin.get(f"/v1/events/{event_id}/registrations")).status_code == 200
        # (no worker runs here: the refunds service never heard of the order)
        assert (await refunds.get(f"/v1/orders/{order_id}/refunds")).status_code == 404
        mollie = await provider.post(
            "/v1/webhooks/mollie",
            content=b"id=tr_outage1",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert mollie.status_code == 200, mollie.text  # an id none of ours: taken, nothing done
        wechat = await provider.post("/v1/webhooks/wechatpay", content=body, headers=headers)
        assert wechat.status_code == 204, wechat.text


async def _all_ready(outage: Outage) -> bool:
    return set((await outage.readiness()).values()) == {200}
