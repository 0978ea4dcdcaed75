"""The local stack as `make up` starts it: routing, health, tokens, supervision, broker restart."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Awaitable
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from ticketing_local import openapi
from ticketing_local.testing import wait_until
from ticketing_shared.auth import DEV_AUDIENCE, DEV_ISSUER
from ticketing_shared.contracts.base import EVENT_TYPES
from ticketing_shared.contracts.topics import ALL_TOPICS

from .conftest import RefundShop, Stack

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
        ("/v1/events/e1/refunds", "refunds"),
        ("/v1/events/e1/registrations", "orders"),
        ("/v1/events/e1/registrations.csv", "orders"),
    ],
)
async def test_gateway_routes_each_path_to_its_service(
    stack: Stack, path: str, service: str
) -> None:
    """Which API answered is told by the request counters each one exports (the answers
    themselves do not name their service)."""
    async with httpx.AsyncClient(timeout=5) as c:
        resp, answered = await _answered_by(stack, c, "GET", path)
    assert answered == {service}
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "x-service" not in resp.headers
    assert resp.headers["cache-control"] == "no-store"
    assert resp.headers["x-content-type-options"] == "nosniff"


async def _answered_by(
    stack: Stack, c: httpx.AsyncClient, method: str, path: str
) -> tuple[httpx.Response, set[str]]:
    """``method path`` through the gateway, and the services whose request counters moved."""

    async def counts() -> dict[str, float]:
        out = {}
        for svc in ("orders", "payments", "refunds", "notifications"):
            api = f"http://127.0.0.1:{stack.port(f'{svc.upper()}_API_PORT')}"
            out[svc] = sum(
                float(line.rsplit(" ", 1)[1])
                for line in (await c.get(f"{api}/metrics")).text.splitlines()
                if line.startswith("http_requests_total{") and 'route="/metrics"' not in line
            )
        return out

    before = await counts()
    resp = await c.request(method, stack.gateway + path)
    after = await counts()
    return resp, {svc for svc in after if after[svc] > before[svc]}


async def test_the_gateway_serves_the_api_document_and_routes_every_operation_in_it(
    stack: Stack,
) -> None:
    """/openapi.json is the merged document of every API, /docs its Swagger UI; each operation
    it lists reaches the service it names (an anonymous call: answered, refused, by that
    service, never by the gateway's own 404)."""
    async with httpx.AsyncClient(timeout=5) as c:
        served = await c.get(stack.gateway + "/openapi.json")
        page = await c.get(stack.gateway + "/docs")
        assert served.status_code == 200, served.text
        assert served.headers["content-type"].startswith("application/json")
        assert served.content == openapi.MERGED.read_bytes()
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert 'url: "/openapi.json"' in page.text and "swagger-ui" in page.text
        for path, operations in served.json()["paths"].items():
            concrete = re.sub(r"\{[^}]+\}", "0193a3c2-7d4e-7b1a-9f2e-3c4d5e6f7a8b", path)
            for method, operation in operations.items():
                resp, answered = await _answered_by(stack, c, method.upper(), concrete)
                assert answered == {operation["x-service"]}, (method, path, resp.status_code)
                assert resp.status_code < 500, (method, path, resp.text)


async def test_every_service_role_is_healthy_and_exposes_metrics(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=5) as c:
        for svc in ("ORDERS", "PAYMENTS", "REFUNDS", "NOTIFICATIONS"):
            for role in ("API", "WORKER"):
                base = f"http://127.0.0.1:{stack.port(f'{svc}_{role}_PORT')}"
                ready = await c.get(f"{base}/readyz")
                assert ready.status_code == 200, (svc, role, ready.text)
                assert ready.json()["checks"] == {"database": True, "broker": True}
                assert (await c.get(f"{base}/metrics")).status_code == 200
        # each worker's AsyncAPI document: what it publishes and consumes, with the payload
        # schema of each event's contract
        for svc in ("orders", "payments", "refunds", "notifications"):
            api = f"http://127.0.0.1:{stack.port(f'{svc.upper()}_WORKER_PORT')}"
            spec = (await c.get(f"{api}/asyncapi.json")).json()
            assert spec["asyncapi"] == "3.0.0"
            actions: dict[str, set[str]] = {"send": set(), "receive": set()}
            for operation in spec["operations"].values():
                for ref in operation["messages"]:
                    name = ref["$ref"].rsplit("/", 1)[1]
                    message = spec["components"]["messages"][name]
                    model = EVENT_TYPES[message["name"]]
                    payload = spec["components"]["schemas"][name]
                    assert (
                        payload["properties"]
                        == model.model_json_schema(ref_template="#/components/schemas/{model}")[
                            "properties"
                        ]
                    )
                    actions[operation["action"]].add(message["name"])
            own = {t for t, m in EVENT_TYPES.items() if m.topic == f"{svc}.events"}
            assert actions["send"] == own, svc
            assert actions["receive"], svc
        assert "order.paid" in actions["receive"]  # notifications mails the buyer's tickets


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


async def _restart_broker(stack: Stack) -> None:
    """SIGKILL the broker; return once the supervisor started another one, queued every
    service's replay and brought every worker back."""
    before = stack.state()["children"]["broker"]["pid"]
    os.killpg(before, signal.SIGKILL)

    async def back() -> bool:
        state = stack.state()
        if state["children"]["broker"]["pid"] in (before, None) or state.get("replay_due"):
            return False
        async with httpx.AsyncClient(timeout=2) as c:
            for svc in ("ORDERS", "PAYMENTS", "REFUNDS", "NOTIFICATIONS"):
                try:
                    url = f"http://127.0.0.1:{stack.port(f'{svc}_WORKER_PORT')}/readyz"
                    if (await c.get(url)).status_code != 200:
                        return False
                except httpx.HTTPError:
                    return False
        return True

    await wait_until(back, timeout=90, interval=0.25, message="broker and workers back")


@pytest.mark.timeout(300)  # alone, it waits for the stack's first records to age a minute
async def test_a_refund_settles_after_two_broker_restarts_far_apart(stack: Stack) -> None:
    """The memory-only broker dies twice. The second one held the first one's records, which
    the first replay gave it; they are older than any window of creation times reaching back
    from its start (the replay used to cover 60 s), so its successor got a shorter log, and the
    consumers' positions in the longer one skipped what came next: a refund settled at the
    provider stayed pending. Now the workers never outlive a broker and each replay brings back
    everything the lost broker held: the refund settles end to end, the buyer gets one e-mail."""
    shop = RefundShop(stack, "e2e-broker-restarts")
    payments = await asyncpg.connect(
        f"postgresql://postgres@127.0.0.1:{stack.port('POSTGRES_PORT')}/payments"
    )
    try:
        async with shop.client("br-buyer-1") as buyer:
            order = await shop.paid_order(buyer, quantity=3)
            # the scenario needs records older than the old window when the second broker dies
            # (in a full run the stack has them already; run alone, this waits for them to age)
            await wait_until(
                lambda: payments.fetchval(
                    "SELECT min(created_at) < now() - interval '65 seconds' FROM outbox"
                ),
                timeout=120,
                interval=1,
                message="records older than the old replay window",
            )
            await _restart_broker(stack)
            between = await shop.paid_order(buyer, quantity=1)  # everything flows again
            held = await _event_ids(stack)
            await _restart_broker(stack)

            async def all_back() -> bool:  # what the lost broker held, its first replay included
                return held <= await _event_ids(stack)

            await wait_until(all_back, timeout=60, message="every event the lost broker held")

            resp = await shop.refund(order["id"])
            assert resp.status_code == 201, resp.text
            await shop.refund_status(resp.json()["id"], "refunded")
            await shop.order_status(buyer, order["id"], "REFUNDED")
            again = await shop.refund(between["id"])
            assert again.status_code == 201, again.text
            await shop.refund_status(again.json()["id"], "refunded")
            mails = await wait_until(
                lambda: _at_least(shop.refund_mails("br-buyer-1@example.test"), 2),
                timeout=60,
                message="both refund e-mails",
            )
            assert len(mails) == 2
        assert stack.state()["children"]["broker"]["restarts"] >= 2
    finally:
        await payments.close()
        await shop.admin.aclose()


async def _event_ids(stack: Stack) -> set[str]:
    """The ids of every event in the broker's topics, read to their ends."""
    reader = AIOKafkaConsumer(
        bootstrap_servers=f"127.0.0.1:{stack.port('KAFKA_PORT')}", enable_auto_commit=False
    )
    await reader.start()
    try:

        async def partitions() -> list[TopicPartition] | None:
            await reader.topics()  # refreshes the metadata
            found = {t: reader.partitions_for_topic(t) for t in ALL_TOPICS}
            if not all(found.values()):
                return None  # the workers are still creating the topics
            return [TopicPartition(t, p) for t, ps in found.items() for p in ps or ()]

        tps = await wait_until(partitions, timeout=30, message="the topics")
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        ends = await reader.end_offsets(tps)
        ids: set[str] = set()
        while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
            for records in (await reader.getmany(timeout_ms=1000)).values():
                ids.update(
                    value.decode() for r in records for key, value in r.headers if key == "ce_id"
                )
        return ids
    finally:
        await reader.stop()


async def _at_least(mails: Awaitable[list[Any]], n: int) -> list[Any] | None:
    found = await mails
    return found if len(found) >= n else None


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
