"""The whole local stack (``python -m ticketing_local up``, what ``make up`` runs) on free ports,
for the end-to-end tests and the security suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from ticketing_local.embedded import free_port, wait_port
from ticketing_local.stack import render_gateway
from ticketing_local.testing import wait_until
from ticketing_shared.auth import mint_token

PORT_NAMES = (
    "GATEWAY_PORT",
    "ORDERS_API_PORT",
    "PAYMENTS_API_PORT",
    "REFUNDS_API_PORT",
    "NOTIFICATIONS_API_PORT",
    "ORDERS_WORKER_PORT",
    "PAYMENTS_WORKER_PORT",
    "REFUNDS_WORKER_PORT",
    "NOTIFICATIONS_WORKER_PORT",
    "MAIL_HTTP_PORT",
    "WECHAT_SANDBOX_PORT",
    "MOLLIE_SANDBOX_PORT",
    "MAIL_SMTP_PORT",
    "POSTGRES_PORT",
    "KAFKA_PORT",
)


@dataclass
class Stack:
    env: dict[str, str]
    run_dir: Path

    def port(self, name: str) -> int:
        return int(self.env[name])

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.port('GATEWAY_PORT')}"

    @property
    def mail(self) -> str:
        return f"http://127.0.0.1:{self.port('MAIL_HTTP_PORT')}"

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ticketing_local", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def state(self) -> dict:
        return json.loads((self.run_dir / "stack.json").read_text())

    def token(self, sub: str, **claims) -> str:
        key = (self.run_dir / "keys" / "jwt-private.pem").read_text()
        return mint_token(key, sub=sub, **claims)


@contextmanager
def run_gateway(folder: Path, **overrides: str) -> Iterator[str]:
    """A gateway of its own (nginx, the one configuration, rendered as the local stack renders
    it, with these placeholders' values) on a free port; yields its URL."""
    port = free_port()
    config = render_gateway(folder, GATEWAY_PORT=f"127.0.0.1:{port}", **overrides)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [nginx, "-p", str(folder), "-c", str(config), "-e", str(folder / "error.log")]
    proc = subprocess.Popen([*argv, "-g", "daemon off;"], stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="session")
def stack(work_dir: Path) -> Iterator[Stack]:
    run_dir = work_dir / "stack"
    env = {
        **os.environ,
        "TICKETING_RUN_DIR": str(run_dir),
        "APP_ENV": "dev",
        # payments asks Mollie about attempts whose webhooks went missing after 3 s, not minutes
        "PAYMENTS_MOLLIE_RECONCILE_AFTER_S": "3",
        "PAYMENTS_MOLLIE_RECONCILE_EVERY_S": "2",
        "PAYMENTS_RECONCILE_INTERVAL_S": "1",
    }
    env.update({name: str(free_port()) for name in PORT_NAMES})
    s = Stack(env, run_dir)
    up = s.cli("up", "--timeout", "180")
    if up.returncode != 0:
        logs = "\n".join(
            f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
            for p in sorted((run_dir / "logs").glob("*.log"))
        )
        s.cli("down")
        pytest.fail(f"stack did not come up:\n{up.stdout}\n{up.stderr}\n{logs}")
    try:
        yield s
    finally:
        s.cli("down")


class Shop:
    """A tenant's shop on the running stack: events, orders, mail, the WeChat Pay sandbox."""

    def __init__(self, stack: Stack, tenant: str) -> None:
        self.stack, self.tenant = stack, tenant
        self.admin = self.client(f"{tenant}-admin", roles={tenant: "owner"})

    def client(self, sub: str, **claims: Any) -> httpx.AsyncClient:
        token = self.stack.token(sub, email=f"{sub}@example.test", **claims)
        return httpx.AsyncClient(
            base_url=self.stack.gateway, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    async def event(
        self,
        *,
        require_approval: bool = False,
        starts_in: timedelta = timedelta(days=20),
        currency: str = "CNY",
    ) -> tuple[str, str]:
        ev = await self.admin.post(
            f"/v1/tenants/{self.tenant}/events",
            json={
                "title": "Spring gala",
                "starts_at": (datetime.now(UTC) + starts_in).isoformat(),
                "require_approval": require_approval,
                "currency": currency,
            },
        )
        assert ev.status_code == 201, ev.text
        tt = await self.admin.post(
            f"/v1/events/{ev.json()['id']}/ticket-types",
            json={
                "name": "Standard",
                "max_quantity": 50,
                "price_tiers": [
                    {"quantity": 1, "total_amount": 9900},
                    {"quantity": 3, "total_amount": 26700},
                ],
            },
        )
        assert tt.status_code == 201, tt.text
        return ev.json()["id"], tt.json()["id"]

    async def order(self, buyer: httpx.AsyncClient, quantity: int = 3, **kw: Any) -> dict[str, Any]:
        event_id, tt_id = await self.event(**kw)
        resp = await buyer.post(
            f"/v1/events/{event_id}/registrations",
            json={"ticket_type_id": tt_id, "quantity": quantity},
        )
        assert resp.status_code == 201, resp.text
        return dict(resp.json()["order"])  # a client pays at once: no waiting for payments

    async def mails(self, to: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(timeout=5) as c:
            return list((await c.get(f"{self.stack.mail}/messages", params={"to": to})).json())

    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.stack.port('WECHAT_SANDBOX_PORT')}"

    def mollie(self) -> str:
        return f"http://127.0.0.1:{self.stack.port('MOLLIE_SANDBOX_PORT')}"

    def mollie_key(self) -> str:
        config = json.loads((self.stack.run_dir / "keys" / "mollie" / "mollie.json").read_text())
        return str(config["api_key"])

    async def order_status(
        self, buyer: httpx.AsyncClient, order_id: str, status: str
    ) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = (await buyer.get(f"/v1/orders/{order_id}")).json()
            return body if body.get("status") == status else None

        return await wait_until(probe, timeout=60, message=f"order {status}")


class RefundShop(Shop):
    async def paid_order(
        self, buyer: httpx.AsyncClient, quantity: int = 3, **kw: Any
    ) -> dict[str, Any]:
        """An order paid with WeChat Pay (CNY) or, given ``currency="EUR"``, with Mollie (the
        buyer pays on the sandbox's checkout page)."""
        mollie = kw.get("currency", "CNY") != "CNY"
        order = await self.order(buyer, quantity, **kw)
        checkout = await buyer.post(
            f"/v1/orders/{order['id']}/payments",
            json={"provider": "mollie" if mollie else "wechatpay"},
        )
        assert checkout.status_code == 201, checkout.text
        async with httpx.AsyncClient(timeout=10) as c:
            if mollie:
                paid = await c.post(checkout.json()["checkout_url"], data={"action": "paid"})
                assert paid.status_code == 303, paid.text
            else:
                no = checkout.json()["out_trade_no"]
                paid = await c.post(f"{self.sandbox()}/sandbox/pay/{no}")
                assert paid.status_code == 200, paid.text
        return await self.order_status(buyer, order["id"], "PAID")

    async def refund(
        self,
        order_id: str,
        body: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> httpx.Response:
        return await (client or self.admin).post(
            f"/v1/orders/{order_id}/refunds",
            json={"reason": "organizer", **(body or {})},
            headers={"Idempotency-Key": key or uuid.uuid4().hex},
        )

    async def refund_status(self, refund_id: str, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            body = (await self.admin.get(f"/v1/refunds/{refund_id}")).json()
            return body if body.get("status") == status else None

        return await wait_until(probe, timeout=60, message=f"refund {refund_id} {status}")

    async def sold(self, event_id: str) -> int:
        body = (await self.admin.get(f"/v1/events/{event_id}")).json()
        return int(body["ticket_types"][0]["current_quantity"])

    async def refund_mails(self, to: str) -> list[dict[str, Any]]:
        return [m for m in await self.mails(to) if "refund" in m["subject"].lower()]
