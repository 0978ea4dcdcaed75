"""Chaos run: a bounded load on a fresh local stack while every process is killed, then counted
invariants.

    make chaos                 # 150 s of load and faults, then the checks
    make chaos DURATION=240

It starts its own stack (``run/chaos/``, free ports, orders expiring after 30 s) and drives it
through the gateway as clients would: buyers buy and pay with WeChat Pay and Mollie, cancel,
let orders expire, pay after expiry; organizers refund in full, by seat and several at once.
Clients retry what a careful client retries (connection errors, 502/503/504, 429, after
``Retry-After``) with the same ``Idempotency-Key``. Meanwhile the fault injector SIGKILLs each
worker and each API, kills the broker twice (more than a minute apart) and restarts PostgreSQL
in immediate mode (a crash).

Then it waits until the stack is quiet and checks, from the databases, the sandboxes and the
mail inbox: every order ended as its story requires; money taken at a provider is kept only by
a paid order, else refunded; every refund requested reached a terminal state in refunds and in
payments, the same one, and the provider agrees; exactly one e-mail per cause; inventory equals
live seats; no dead letters; nothing left unpublished; no answer 500. It prints one summary line
and exits 1 on any violation (listed above the summary).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from orders.repository import inventory_report
from ticketing_local.embedded import EmbeddedPostgres, free_port
from ticketing_shared.auth import mint_token

REPO = Path(__file__).resolve().parents[1]
SERVICES = ("orders", "payments", "refunds", "notifications")
PORT_NAMES = (
    "GATEWAY_PORT",
    *(f"{s.upper()}_API_PORT" for s in SERVICES),
    *(f"{s.upper()}_WORKER_PORT" for s in SERVICES),
    "MAIL_HTTP_PORT",
    "MAIL_SMTP_PORT",
    "WECHAT_SANDBOX_PORT",
    "MOLLIE_SANDBOX_PORT",
    "POSTGRES_PORT",
    "KAFKA_PORT",
)
TTL_S = 30  # orders left unpaid expire after this
TRANSIENT = {502, 503, 504, 429}
TERMINAL_REFUND = {"refunded", "failed", "canceled"}
PAID_LIKE = {"PAID", "REFUND_PENDING", "PARTIALLY_REFUNDED", "REFUNDED"}


# --------------------------------------------------------------------------------------- stack
@dataclass
class Stack:
    run_dir: Path
    env: dict[str, str]

    @classmethod
    def fresh(cls) -> Stack:
        run_dir = REPO / "run" / "chaos"
        if run_dir.exists():
            subprocess.run(["rm", "-rf", str(run_dir)], check=True)
        env = {
            **os.environ,
            "TICKETING_RUN_DIR": str(run_dir),
            "APP_ENV": "dev",
            "ORDER_TTL_SECONDS": str(TTL_S),
            # payments asks Mollie about attempts whose webhooks went missing after 3 s
            "PAYMENTS_MOLLIE_RECONCILE_AFTER_S": "3",
            "PAYMENTS_MOLLIE_RECONCILE_EVERY_S": "2",
            "PAYMENTS_RECONCILE_INTERVAL_S": "1",
            **{name: str(free_port()) for name in PORT_NAMES},
        }
        return cls(run_dir, env)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ticketing_local", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    def port(self, name: str) -> int:
        return int(self.env[name])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port(name)}"

    def dsn(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port('POSTGRES_PORT')}/{database}"

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.run_dir / "stack.json").read_text()))

    def token(self, sub: str, **claims: Any) -> str:
        key = (self.run_dir / "keys" / "jwt-private.pem").read_text()
        return mint_token(key, sub=sub, email=f"{sub}@example.test", **claims)

    def postgres(self) -> EmbeddedPostgres:
        return EmbeddedPostgres(
            self.run_dir / "pg",
            self.port("POSTGRES_PORT"),
            log_file=self.run_dir / "logs" / "postgres.log",
        )


# ------------------------------------------------------------------------------------ clients
@dataclass
class Report:
    violations: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)

    def violation(self, text: str) -> None:
        self.violations.append(text)


class Client:
    """A careful client of the gateway: what is worth retrying is retried, the same request."""

    def __init__(self, stack: Stack, report: Report, token: str) -> None:
        self.report = report
        self.http = httpx.AsyncClient(
            base_url=stack.url("GATEWAY_PORT"),
            timeout=20,
            headers={"Authorization": f"Bearer {token}"},
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        key: str | None = None,
        retry_on: tuple[int, ...] = (),
        within: float = 120,
    ) -> httpx.Response:
        """``retry_on``: answers that mean "not yet" here (e.g. 404 while a service has still to
        learn an order); retried for at most ``within`` seconds, as are transient faults."""
        headers = {"Idempotency-Key": key} if key else {}
        deadline = time.monotonic() + within
        pause = 0.2
        while True:
            try:
                resp = await self.http.request(method, path, json=body, headers=headers)
            except httpx.TransportError:
                self.report.retried["connection"] += 1
                resp = None
            if resp is not None:
                self.report.statuses[resp.status_code] += 1
                if resp.status_code >= 500 and resp.status_code not in TRANSIENT:
                    self.report.violation(
                        f"{resp.status_code} on {method} {path}: {resp.text[:200]}"
                    )
                elif resp.status_code not in TRANSIENT and resp.status_code not in retry_on:
                    return resp
                else:
                    self.report.retried[str(resp.status_code)] += 1
            if time.monotonic() > deadline:
                if resp is None:
                    raise TimeoutError(f"{method} {path}: no answer")
                return resp
            wait = pause
            if resp is not None and (after := resp.headers.get("retry-after", "")).isdigit():
                wait = min(float(after), 2.0)
            await asyncio.sleep(wait * random.uniform(0.8, 1.2))
            pause = min(pause * 2, 2.0)

    async def close(self) -> None:
        await self.http.aclose()


async def until(probe: Callable[[], Awaitable[Any]], within: float, pause: float = 0.5) -> Any:
    deadline = time.monotonic() + within
    while True:
        try:
            found = await probe()
        except (httpx.TransportError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(pause)


# ---------------------------------------------------------------------------------- the shop
@dataclass
class Case:
    """One story and what must be true at the end of it."""

    story: str
    buyer: str
    provider: str
    order_id: str | None = None
    # acceptable endings: (order status, e-mails by kind)
    endings: list[tuple[str, Counter[str]]] = field(default_factory=list)
    refunds: list[str] = field(default_factory=list)
    unrefunded: str | None = None  # the order's status should none of its refunds be paid out
    late_payment_taken: bool = False  # a payment after expiry the provider accepted
    failed: str | None = None

    def settled(self, outcome: dict[str, str]) -> None:
        """Its refunds' outcomes known: one e-mail per refund paid out, and one per refund that
        failed (which leaves the order as it was)."""
        if not self.refunds:
            return
        paid_out = sum(outcome.get(r) == "refunded" for r in self.refunds)
        status = self.endings[0][0] if paid_out else str(self.unrefunded)
        mails = Counter(self.endings[0][1])
        mails["refund"] = paid_out
        mails["refund_failed"] = sum(outcome.get(r) == "failed" for r in self.refunds)
        self.endings = [(status, +mails)]


@dataclass
class Shop:
    stack: Stack
    report: Report
    tenant: str
    admin: Client
    ticket_types: dict[str, tuple[str, str]] = field(default_factory=dict)  # provider → ids
    cases: list[Case] = field(default_factory=list)

    @classmethod
    async def open(cls, stack: Stack, report: Report) -> Shop:
        tenant = f"chaos-{uuid.uuid4().hex[:6]}"
        admin = Client(stack, report, stack.token(f"{tenant}-owner", roles={tenant: "owner"}))
        shop = cls(stack, report, tenant, admin)
        for provider, currency in (("wechatpay", "CNY"), ("mollie", "EUR")):
            ev = await admin.call(
                "POST",
                f"/v1/tenants/{tenant}/events",
                body={
                    "title": f"Chaos night ({currency})",
                    "starts_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
                    "currency": currency,
                },
            )
            assert ev.status_code == 201, ev.text
            tt = await admin.call(
                "POST",
                f"/v1/events/{ev.json()['id']}/ticket-types",
                body={
                    "name": "Standard",
                    "max_quantity": 100_000,
                    "price_tiers": [
                        {"quantity": 1, "total_amount": 9900},
                        {"quantity": 3, "total_amount": 26700},
                    ],
                },
            )
            assert tt.status_code == 201, tt.text
            shop.ticket_types[provider] = (ev.json()["id"], tt.json()["id"])
        return shop

    # the stories ----------------------------------------------------------------------------
    async def play(self, story: str, n: int) -> None:
        provider = "wechatpay" if n % 2 else "mollie"
        case = Case(story, f"{self.tenant}-b{n}", provider)
        self.cases.append(case)
        buyer = Client(self.stack, self.report, self.stack.token(case.buyer))
        try:
            await getattr(self, f"_{story}")(case, buyer)
        except Exception as exc:  # the story could not go on: that is a finding, not a crash
            case.failed = f"{type(exc).__name__}: {exc}"
        finally:
            await buyer.close()

    async def _buy(self, case: Case, buyer: Client, quantity: int = 1) -> dict[str, Any]:
        event_id, tt_id = self.ticket_types[case.provider]
        resp = await buyer.call(
            "POST",
            f"/v1/events/{event_id}/registrations",
            body={"ticket_type_id": tt_id, "quantity": quantity},
            key=uuid.uuid4().hex,
        )
        if resp.status_code != 201:
            raise RuntimeError(f"purchase answered {resp.status_code}: {resp.text[:200]}")
        order = dict(resp.json()["order"])
        case.order_id = order["id"]
        return order

    async def _checkout(self, case: Case, buyer: Client) -> dict[str, Any]:
        resp = await buyer.call(
            "POST",
            f"/v1/orders/{case.order_id}/payments",
            body={"provider": case.provider},
            # the broker may be down longer than payments waits for an order it has not learned
            retry_on=(404, 409),
            within=60,
        )
        if resp.status_code != 201:
            raise RuntimeError(f"checkout answered {resp.status_code}: {resp.text[:200]}")
        return dict(resp.json())

    async def _pay_at_provider(self, case: Case, checkout: dict[str, Any]) -> bool:
        """The buyer pays on the provider's side; False when the provider refused."""
        async with httpx.AsyncClient(timeout=20) as c:
            for _ in range(60):
                try:
                    if case.provider == "mollie":
                        # the page sends the buyer back whatever happened: ask the sandbox
                        resp = await c.post(checkout["checkout_url"], data={"action": "paid"})
                        if resp.status_code == 303:
                            payment_id = checkout["checkout_url"].rstrip("/").rsplit("/", 1)[-1]
                            state = await c.get(
                                f"{self.stack.url('MOLLIE_SANDBOX_PORT')}/sandbox/payments/{payment_id}"
                            )
                            return bool(state.json().get("status") == "paid")
                    else:
                        no = checkout["out_trade_no"]
                        resp = await c.post(
                            f"{self.stack.url('WECHAT_SANDBOX_PORT')}/sandbox/pay/{no}"
                        )
                        if resp.status_code == 200:
                            return True
                    if resp.status_code < 500:
                        return False
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.5)
        raise RuntimeError("the provider's sandbox did not answer")

    async def _status(self, case: Case, buyer: Client, wanted: set[str], within: float) -> str:
        async def probe() -> str | None:
            resp = await buyer.call("GET", f"/v1/orders/{case.order_id}", within=30)
            status = str(resp.json().get("status")) if resp.status_code == 200 else None
            return status if status in wanted else None

        found = await until(probe, within)
        if found is None:
            raise RuntimeError(f"order {case.order_id} never became {'|'.join(sorted(wanted))}")
        return str(found)

    async def _paid(self, case: Case, buyer: Client, quantity: int = 1) -> dict[str, Any]:
        order = await self._buy(case, buyer, quantity)
        checkout = await self._checkout(case, buyer)
        if not await self._pay_at_provider(case, checkout):
            raise RuntimeError("the provider refused a payment in time")
        await self._status(case, buyer, {"PAID"}, within=120)
        return order

    async def _refund(self, case: Case, body: dict[str, Any], key: str) -> httpx.Response:
        return await self.admin.call(
            "POST",
            f"/v1/orders/{case.order_id}/refunds",
            body={"reason": "organizer", **body},
            key=key,
            # the broker may be down longer than refunds waits to hear of the payment
            retry_on=(404, 409),
            within=60,
        )

    async def _pay(self, case: Case, buyer: Client) -> None:
        case.endings = [("PAID", Counter(paid=1))]
        await self._paid(case, buyer, random.choice((1, 3)))

    async def _cancel(self, case: Case, buyer: Client) -> None:
        case.endings = [("CANCELLED", Counter())]
        await self._buy(case, buyer)
        resp = await buyer.call("POST", f"/v1/orders/{case.order_id}/cancel")
        if resp.status_code != 200:
            raise RuntimeError(f"cancel answered {resp.status_code}: {resp.text[:200]}")

    async def _expire(self, case: Case, buyer: Client) -> None:
        case.endings = [("CANCELLED", Counter(expired=1))]
        await self._buy(case, buyer)
        await self._checkout(case, buyer)  # and never pays
        await self._status(case, buyer, {"CANCELLED"}, within=TTL_S + 120)

    async def _late_pay(self, case: Case, buyer: Client) -> None:
        await self._buy(case, buyer)
        checkout = await self._checkout(case, buyer)
        await self._status(case, buyer, {"CANCELLED"}, within=TTL_S + 120)
        case.late_payment_taken = await self._pay_at_provider(case, checkout)
        if case.late_payment_taken:
            # revived if the seat is still there, else cancelled and the money returned
            case.endings = [
                ("PAID", Counter(expired=1, paid=1)),
                ("CANCELLED", Counter(expired=1, returned=1, refund=1)),
            ]
        else:  # the provider closed the transaction when the order expired
            case.endings = [("CANCELLED", Counter(expired=1))]

    async def _refund_full(self, case: Case, buyer: Client) -> None:
        case.endings = [("REFUNDED", Counter(paid=1, refund=1))]
        case.unrefunded = "PAID"
        await self._paid(case, buyer, 3)
        resp = await self._refund(case, {}, uuid.uuid4().hex)
        if resp.status_code != 201:
            raise RuntimeError(f"refund answered {resp.status_code}: {resp.text[:200]}")
        case.refunds.append(resp.json()["id"])

    async def _refund_seat(self, case: Case, buyer: Client) -> None:
        case.endings = [("PARTIALLY_REFUNDED", Counter(paid=1, refund=1))]
        case.unrefunded = "PAID"
        order = await self._paid(case, buyer, 3)
        seat = order["seats"][-1]["id"]
        resp = await self._refund(case, {"items": [{"seat_id": seat}]}, uuid.uuid4().hex)
        if resp.status_code != 201:
            raise RuntimeError(f"refund answered {resp.status_code}: {resp.text[:200]}")
        case.refunds.append(resp.json()["id"])

    async def _refund_concurrently(self, case: Case, buyer: Client) -> None:
        """Two seats refunded at once, one of the requests sent twice (same key)."""
        order = await self._paid(case, buyer, 3)
        one, two = (s["id"] for s in order["seats"][1:])
        k1, k2 = uuid.uuid4().hex, uuid.uuid4().hex
        answers = await asyncio.gather(
            self._refund(case, {"items": [{"seat_id": one}]}, k1),
            self._refund(case, {"items": [{"seat_id": two}]}, k2),
            self._refund(case, {"items": [{"seat_id": one}]}, k1),
        )
        codes = [a.status_code for a in answers]
        if (
            codes[0] == 201
            and codes[2] == 201
            and answers[0].json()["id"] != answers[2].json()["id"]
        ):
            self.report.violation(f"order {case.order_id}: one key, two refunds")
        ids = sorted({a.json()["id"] for a in answers if a.status_code == 201})
        if not ids:
            raise RuntimeError(f"no concurrent refund accepted: {codes}")
        case.refunds.extend(ids)
        case.endings = [("PARTIALLY_REFUNDED", Counter(paid=1, refund=len(ids)))]
        case.unrefunded = "PAID"


STORIES = {
    "pay": 5,
    "cancel": 2,
    "expire": 2,
    "late_pay": 2,
    "refund_full": 3,
    "refund_seat": 2,
    "refund_concurrently": 2,
}


async def load(shop: Shop, seconds: float, concurrency: int) -> int:
    """``concurrency`` buyers play random stories until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    counter = iter(range(1_000_000))
    bag = [story for story, weight in STORIES.items() for _ in range(weight)]

    async def lane() -> None:
        while time.monotonic() < deadline:
            await shop.play(random.choice(bag), next(counter))

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return len(shop.cases)


# ------------------------------------------------------------------------------------- faults
async def inject_faults(stack: Stack, report: Report, started: float) -> None:
    """The schedule, in seconds since the load began: each worker, each API, the broker twice
    (75 s apart, beyond the minute a replay once reached back) and PostgreSQL."""
    schedule: list[tuple[float, str]] = [
        (10, "broker"),
        (20, "orders-worker"),
        (28, "payments-worker"),
        (36, "refunds-worker"),
        (44, "notifications-worker"),
        (52, "orders-api"),
        (60, "payments-api"),
        (68, "refunds-api"),
        (76, "notifications-api"),
        (85, "broker"),
        (100, "postgres"),
    ]
    for at, target in schedule:
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        if target == "postgres":
            pg = stack.postgres()
            await asyncio.to_thread(pg.stop, "immediate")
            await asyncio.to_thread(pg.start)
        else:
            pid = stack.state()["children"][target]["pid"]
            if pid is None:
                continue
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        report.faults[target.split("-")[-1]] += 1
        print(f"  t={time.monotonic() - started:5.1f}s  killed {target}", flush=True)


# ------------------------------------------------------------------------------------- checks
async def quiet(stack: Stack, within: float = 180) -> bool:
    """Nothing unpublished, no e-mail waiting, the mail count still for a while."""
    last, still_since = -1, time.monotonic()

    async def probe() -> bool:
        nonlocal last, still_since
        for svc in SERVICES:
            conn = await asyncpg.connect(stack.dsn(svc))
            try:
                if await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                    return False
                if svc == "notifications" and await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'pending'"
                ):
                    return False
            finally:
                await conn.close()
        async with httpx.AsyncClient(timeout=10) as c:
            count = len((await c.get(f"{stack.url('MAIL_HTTP_PORT')}/messages")).json())
        if count != last:
            last, still_since = count, time.monotonic()
        return time.monotonic() - still_since > 5

    return bool(await until(probe, within, pause=1))


def kind_of(subject: str) -> str:
    if "has expired" in subject:
        return "expired"
    if "are confirmed" in subject:
        return "paid"
    if "returning your payment" in subject:
        return "returned"
    if "could not be completed" in subject:
        return "refund_failed"
    if "refund" in subject.lower():
        return "refund"
    return "other"


async def check(stack: Stack, shop: Shop, report: Report) -> dict[str, int]:
    figures: Counter[str] = Counter()
    async with httpx.AsyncClient(timeout=20) as c:
        mails = (await c.get(f"{stack.url('MAIL_HTTP_PORT')}/messages")).json()
    by_buyer: dict[str, Counter[str]] = {}
    ids = Counter(str(m.get("headers", {}).get("Message-ID") or m["id"]) for m in mails)
    for dup, n in ids.items():
        if n > 1:
            report.violation(f"e-mail {dup} delivered {n} times")
    for m in mails:
        to = m["to"] if isinstance(m["to"], str) else ",".join(m["to"])
        by_buyer.setdefault(to.split("@")[0], Counter())[kind_of(m["subject"])] += 1
    figures["e-mails"] = len(mails)

    conn = await asyncpg.connect(stack.dsn("refunds"))
    try:
        outcome = {
            str(r["id"]): r["status"]
            for r in await conn.fetch(
                "SELECT id, status FROM refunds WHERE tenant_id = $1", shop.tenant
            )
        }
        refusals = await conn.fetch(
            "SELECT id, provider, failure_code FROM refunds WHERE tenant_id = $1 AND status = 'failed'",
            shop.tenant,
        )
    finally:
        await conn.close()
    for r in refusals:
        # the one refusal expected: Mollie takes no second refund of the same amount on a
        # payment within the hour (two seats of one price refunded one after the other)
        if (r["provider"], r["failure_code"]) != ("mollie", "duplicate_refund"):
            report.violation(f"refund {r['id']} failed at {r['provider']}: {r['failure_code']}")
    for case in shop.cases:
        case.settled(outcome)

    # orders: every story's ending
    buyer_clients: dict[str, Client] = {}
    for case in shop.cases:
        figures[f"story:{case.story}"] += 1
        if case.failed:
            report.violation(f"{case.story} {case.order_id}: {case.failed}")
            continue
        buyer = buyer_clients.setdefault(case.buyer, Client(stack, report, stack.token(case.buyer)))
        resp = await buyer.call("GET", f"/v1/orders/{case.order_id}")
        status = resp.json().get("status")
        got = by_buyer.get(case.buyer, Counter())
        if not any(status == s and +got == +m for s, m in case.endings):
            report.violation(
                f"{case.story} {case.order_id}: ended {status} with e-mails {dict(got)}, "
                f"expected one of {[(s, dict(m)) for s, m in case.endings]}"
            )
        figures[f"order:{status}"] += 1
        if case.late_payment_taken:
            figures[f"late:{'revived' if status == 'PAID' else 'returned'}"] += 1
    for client in buyer_clients.values():
        await client.close()

    conns = {svc: await asyncpg.connect(stack.dsn(svc)) for svc in SERVICES}
    try:
        # refunds: terminal in refunds and in payments, the same outcome
        refunds = await conns["refunds"].fetch(
            "SELECT id, status, provider, provider_refund_id, kind, order_id FROM refunds"
            " WHERE tenant_id = $1",
            shop.tenant,
        )
        executed = {
            r["refund_id"]: r["status"]
            for r in await conns["payments"].fetch(
                "SELECT refund_id, status FROM provider_refunds WHERE tenant_id = $1", shop.tenant
            )
        }
        requested = {r for case in shop.cases for r in case.refunds}
        known = {str(r["id"]) for r in refunds}
        for missing in sorted(requested - known):
            report.violation(f"refund {missing} accepted with 201 but unknown to refunds")
        for r in refunds:
            figures[f"refund:{r['status']}"] += 1
            if r["status"] not in TERMINAL_REFUND:
                report.violation(f"refund {r['id']} still {r['status']} in refunds")
            elif executed.get(r["id"], "canceled") != r["status"]:
                report.violation(
                    f"refund {r['id']}: {r['status']} in refunds, "
                    f"{executed.get(r['id'])} in payments"
                )
        await check_providers(stack, shop, report, conns, refunds, figures)

        # inventory equals live seats
        async with conns["orders"].transaction():
            await conns["orders"].execute("SELECT set_config('app.tenant_id', '*', true)")
            for row in await inventory_report(conns["orders"]):
                if row["current_quantity"] != row["expected"]:
                    report.violation(f"ticket type {row['id']}: inventory {dict(row)}")
        if n := await conns["notifications"].fetchval(
            "SELECT count(*) FROM deliveries WHERE status <> 'sent'"
        ):
            report.violation(f"{n} e-mail(s) never sent")
        for svc, conn in conns.items():
            if n := await conn.fetchval("SELECT count(*) FROM dead_letters"):
                report.violation(f"{svc}: {n} dead letter(s)")
            if n := await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"):
                report.violation(f"{svc}: {n} outbox row(s) never published")
    finally:
        for conn in conns.values():
            await conn.close()
    for code, n in report.statuses.items():
        if code >= 500:
            figures[f"http:{code}"] += n
    return dict(figures)


async def check_providers(
    stack: Stack,
    shop: Shop,
    report: Report,
    conns: dict[str, asyncpg.Connection],
    refunds: list[asyncpg.Record],
    figures: Counter[str],
) -> None:
    """What the providers say happened: money they took is kept only by a paid order, else
    returned; what they refunded is what refunds calls refunded."""
    orders = {
        str(r["id"]): r["status"]
        for r in await conns["orders"].fetch(
            "SELECT id, status FROM orders WHERE tenant_id = $1", shop.tenant
        )
    }
    returned = {
        str(r["order_id"])
        for r in refunds
        if r["kind"] == "rejected_payment" and r["status"] == "refunded"
    }
    refunded_by_us = {str(r["id"]).replace("-", "") for r in refunds if r["status"] == "refunded"}
    async with httpx.AsyncClient(base_url=stack.url("WECHAT_SANDBOX_PORT"), timeout=20) as c:
        notes = (await c.get("/sandbox/notifications")).json()
    paid_trades = {n["out_trade_no"] for n in notes if n.get("event_type") == "TRANSACTION.SUCCESS"}
    settled = {n["out_refund_no"] for n in notes if n.get("event_type") == "REFUND.SUCCESS"}
    taken = {str(uuid.UUID(no)) for no in paid_trades}
    wechat_refunded = {
        no
        for no in refunded_by_us
        if any(
            str(r["id"]).replace("-", "") == no and r["provider"] == "wechatpay" for r in refunds
        )
    }
    for no in wechat_refunded - settled:
        report.violation(f"refund {no}: refunded in refunds, not settled at WeChat Pay")
    mollie_payments = await conns["payments"].fetch(
        "SELECT order_id, provider_payment_id FROM payments"
        " WHERE tenant_id = $1 AND provider = 'mollie'",
        shop.tenant,
    )
    async with httpx.AsyncClient(base_url=stack.url("MOLLIE_SANDBOX_PORT"), timeout=20) as c:
        for p in mollie_payments:
            if not p["provider_payment_id"]:
                continue
            body = (await c.get(f"/sandbox/payments/{p['provider_payment_id']}")).json()
            if body.get("status") == "paid":
                taken.add(str(p["order_id"]))
        for r in refunds:
            if r["provider"] == "mollie" and r["status"] == "refunded":
                body = (await c.get(f"/sandbox/refunds/{r['provider_refund_id']}")).json()
                if body.get("status") != "refunded":
                    report.violation(
                        f"refund {r['id']}: refunded in refunds, {body.get('status')} at Mollie"
                    )
    figures["paid at providers"] = len(taken)
    for order_id in sorted(taken):
        status = orders.get(order_id)
        if status not in PAID_LIKE and order_id not in returned:
            report.violation(f"order {order_id}: money taken, order {status}, nothing returned")


# --------------------------------------------------------------------------------------- main
async def chaos(stack: Stack, seconds: float, concurrency: int) -> int:
    report = Report()
    shop = await Shop.open(stack, report)
    started = time.monotonic()
    print(f"chaos: load for {seconds:.0f} s, {concurrency} buyers at a time; faults:", flush=True)
    faults = asyncio.create_task(inject_faults(stack, report, started))
    await load(shop, seconds, concurrency)
    await faults
    if not await quiet(stack):
        report.violation("the stack did not quiesce within 180 s")
    figures = await check(stack, shop, report)
    await shop.admin.close()
    for v in report.violations[:40]:
        print(f"  VIOLATION {v}")
    if len(report.violations) > 40:
        print(f"  … and {len(report.violations) - 40} more")
    stories = " ".join(f"{k[6:]}={v}" for k, v in sorted(figures.items()) if k.startswith("story:"))
    ends = " ".join(f"{k[6:]}={v}" for k, v in sorted(figures.items()) if k.startswith("order:"))
    refunds = " ".join(
        f"{k[7:]}={v}" for k, v in sorted(figures.items()) if k.startswith("refund:")
    )
    late = " ".join(f"{k[5:]}={v}" for k, v in sorted(figures.items()) if k.startswith("late:"))
    http = " ".join(f"{k[5:]}×{v}" for k, v in sorted(figures.items()) if k.startswith("http:"))
    faults_text = " ".join(f"{k}={v}" for k, v in sorted(report.faults.items()))
    print(
        f"chaos: {len(shop.cases)} stories ({stories}); orders {ends}; refunds {refunds or 0}; "
        f"{figures.get('paid at providers', 0)} paid at providers; "
        f"late payments taken: {late or 'none'}; {figures['e-mails']} e-mails; "
        f"faults {faults_text}; retried {sum(report.retried.values())} "
        f"(5xx: {http or 'none'}); {time.monotonic() - started:.0f} s; "
        f"{len(report.violations)} violation(s)"
    )
    return 1 if report.violations else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=150, help="load duration (≥ 110)")
    parser.add_argument("--concurrency", type=int, default=12)
    args = parser.parse_args()
    if args.seconds < 110:
        parser.error("the fault schedule needs at least 110 s of load")
    stack = Stack.fresh()
    print(f"chaos: starting a stack in {stack.run_dir}", flush=True)
    up = stack.cli("up", "--timeout", "180")
    if up.returncode != 0:
        print(up.stdout, up.stderr, sep="\n")
        stack.cli("down")
        return 2
    try:
        return asyncio.run(chaos(stack, args.seconds, args.concurrency))
    finally:
        stack.cli("down")
        print(f"chaos: logs in {stack.run_dir / 'logs'}")


if __name__ == "__main__":
    sys.exit(main())
