"""The local stack as `make up` starts it: routing, health, tokens, supervision, broker restart."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from ticketing_shared import db, outbox
from ticketing_shared.auth import DEV_AUDIENCE, DEV_ISSUER
from ticketing_shared.contracts import OrderPaid
from ticketing_shared.testing import wait_until

from .conftest import Stack

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.mark.parametrize(
    ("path", "service"),
    [
        ("/v1/events/e1", "orders"),
        ("/v1/orders/o1", "orders"),
        ("/v1/orders/o1/cancel", "orders"),
        ("/v1/me/orders", "orders"),
        ("/v1/orders/o1/payments", "payments"),
        ("/v1/webhooks/wechatpay", "payments"),
        ("/v1/orders/o1/refunds", "refunds"),
        ("/v1/refunds/r1", "refunds"),
    ],
)
async def test_gateway_routes_each_path_to_its_service(
    stack: Stack, path: str, service: str
) -> None:
    """Which API answered is told by the request counters each one exports (the answers
    themselves do not name their service)."""

    async def counts(c: httpx.AsyncClient) -> dict[str, float]:
        out = {}
        for svc in ("orders", "payments", "refunds", "notifications"):
            text = (
                await c.get(f"http://127.0.0.1:{stack.port(f'{svc.upper()}_API_PORT')}/metrics")
            ).text
            out[svc] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("http_requests_total{") and 'route="/metrics"' not in line
            )
        return out

    async with httpx.AsyncClient(timeout=5) as c:
        before = await counts(c)
        resp = await c.get(stack.gateway + path)
        after = await counts(c)
    assert {svc for svc in after if after[svc] > before[svc]} == {service}
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "x-service" not in resp.headers
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-content-type-options"] == "nosniff"


async def test_every_service_role_is_healthy_and_exposes_metrics(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        for svc in ("ORDERS", "PAYMENTS", "REFUNDS", "NOTIFICATIONS"):
            for role in ("API", "WORKER"):
                base = f"http://127.0.0.1:{stack.port(f'{svc}_{role}_PORT')}"
                ready = await c.get(f"{base}/readyz")
                assert ready.status_code == 200, (svc, role, ready.text)
                assert ready.json()["checks"] == {"database": True, "broker": True}
                assert (await c.get(f"{base}/metrics")).status_code == 200
        spec = (
            await c.get(f"http://127.0.0.1:{stack.port('NOTIFICATIONS_WORKER_PORT')}/asyncapi.json")
        ).json()
        assert "orders.events" in str(spec["channels"])


async def test_make_token_mints_a_token_the_services_accept(stack: Stack) -> None:
    out = stack.cli(
        "token", "--sub", "alice", "--roles", "t1:admin,t2:member", "--email", "a@x.test"
    )
    assert out.returncode == 0, out.stderr
    import jwt

    token = out.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["roles"] == {"t1": "admin", "t2": "member"}
    assert claims["email"] == "a@x.test"
    # the stack's issuer and audience, which every service verifies
    assert (claims["iss"], claims["aud"]) == (stack.env.get("JWT_ISSUER", DEV_ISSUER), DEV_AUDIENCE)
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as c:
        accepted = await c.get("/v1/me/orders", headers={"Authorization": f"Bearer {token}"})
        assert accepted.status_code == 200, accepted.text
    bad = stack.cli("token", "--sub", "mallory", "--roles", "*:admin")
    assert bad.returncode != 0 and "bad tenant id" in bad.stderr


async def test_a_killed_worker_is_restarted_by_the_supervisor(stack: Stack) -> None:
    before = stack.state()["children"]["orders-worker"]
    os.killpg(before["pid"], signal.SIGKILL)

    async def restarted() -> bool:
        child = stack.state()["children"]["orders-worker"]
        if child["pid"] == before["pid"]:
            return False
        async with httpx.AsyncClient(timeout=2) as c:
            try:
                return (
                    await c.get(f"http://127.0.0.1:{stack.port('ORDERS_WORKER_PORT')}/readyz")
                ).status_code == 200
            except httpx.HTTPError:
                return False

    await wait_until(restarted, timeout=60, message="orders worker restarted")


async def test_broker_restart_is_followed_by_automatic_replay(stack: Stack) -> None:
    """The memory-only broker dies; the supervisor restarts it and replays: the mail still goes out."""
    pool = await db.create_pool(
        f"postgresql://postgres@127.0.0.1:{stack.port('POSTGRES_PORT')}/orders",
        min_size=1,
        max_size=2,
    )
    email = f"replay-{uuid.uuid4().hex[:8]}@example.test"
    try:
        broker = stack.state()["children"]["broker"]
        os.killpg(broker["pid"], signal.SIGKILL)
        oid = uuid.uuid4()
        ev = OrderPaid(
            order_id=oid,
            tenant_id="t",
            buyer_id="u",
            buyer_email=email,
            quantity=1,
            total_amount=100,
            currency="EUR",
            transaction_id="tx",
            paid_at=datetime.now(UTC),
        )
        async with db.transaction(pool) as conn:
            await outbox.emit(conn, ev, subject=oid, source="orders")

        async def mailed() -> bool:
            async with httpx.AsyncClient(timeout=2) as c:
                return (
                    len((await c.get(f"{stack.mail}/messages", params={"to": email})).json()) == 1
                )

        await wait_until(
            mailed, timeout=90, interval=0.25, message="the e-mail after the broker restart"
        )
        await asyncio.sleep(0)
        assert stack.state()["children"]["broker"]["restarts"] >= 1
    finally:
        await pool.close()


async def test_secrets_are_private_and_the_database_folder_is_not_world_writable(
    stack: Stack,
) -> None:
    import stat as st

    keys = stack.run_dir / "keys"
    private = [
        keys / "jwt-private.pem",
        keys / "invite-secret",
        keys / "wechat" / "merchant-private.pem",
        keys / "wechat" / "platform-private.pem",
        keys / "wechat" / "apiv3.key",
        keys / "mollie" / "mollie.json",
    ]
    for path in private:
        assert st.S_IMODE(path.stat().st_mode) == 0o600, path
    for folder in (keys, keys / "wechat", keys / "mollie"):
        assert st.S_IMODE(folder.stat().st_mode) == 0o700, folder
    pg = stack.run_dir / "pg"
    for folder in (pg, *(p for p in pg.iterdir() if p.is_dir())):
        assert not folder.stat().st_mode & st.S_IWOTH, folder
