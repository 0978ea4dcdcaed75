"""Random interleavings of purchase, payment, expiry, cancel, redeem and refund settlement.

A hypothesis state machine drives the orders use cases on a real PostgreSQL and checks the
inventory invariant after every step: for every ticket type, current_quantity
equals the seats held by active orders (minus voided seats) plus active free registrations, and
stays within 0..max_quantity.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orders import repository as repo
from orders.schemas import EventCreate, RegistrationCreate, StaffAction, TicketTypeCreate
from orders.service import (
    catalog,
    invites,
    lifecycle,
    payment_outcome,
    purchase,
    refund_outcome,
    registrations,
)
from ticketing_local.testing.plugin import Infra
from ticketing_shared import db
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import PaymentSucceeded, RefundCompleted
from ticketing_shared.errors import DomainError
from ticketing_shared.invite_links import InviteLinks

LINKS = InviteLinks(secrets.token_bytes(32))  # a key made at run time

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
TENANT = "t-stateful"
ADMIN = Principal(sub="admin", roles={TENANT: "admin"})


class InventoryMachine(RuleBasedStateMachine):
    loop: asyncio.AbstractEventLoop
    pool: asyncpg.Pool  # as the service's role: each use case scoped to the tenant, as the API does
    admin: asyncpg.Pool  # the test's own peeks and time travel, past row-level security

    def __init__(self) -> None:
        super().__init__()
        self.orders: list[str] = []
        self.free_regs: list[str] = []
        self.users = 0
        self.catalog = purchase.PurchaseCatalog()  # kept across steps, as in the API process
        self.event_id, self.tt_id, self.free_tt_id = self._run(self._catalog())

    def _run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _tx(self, fn, *args, **kwargs):
        try:
            async with db.transaction(self.pool, tenant_id=TENANT) as conn:
                return await fn(conn, *args, **kwargs)
        except DomainError:
            return None

    async def _register(self, ticket_type_id, quantity: int):
        """A purchase as the API runs it: on a plain connection (each attempt is its own
        self-committing statement), priced from the catalog copy kept across steps."""
        try:
            async with self.pool.acquire() as conn:
                return await purchase.register(
                    conn,
                    self._user(),
                    self.event_id,
                    RegistrationCreate(ticket_type_id=ticket_type_id, quantity=quantity),
                    catalog=self.catalog,
                    links=LINKS,
                    order_ttl=timedelta(minutes=30),
                    max_quantity_per_order=10,
                )
        except DomainError:
            return None

    async def _catalog(self):
        async with db.transaction(self.pool, tenant_id=TENANT) as conn:
            event = await catalog.create_event(
                conn,
                ADMIN,
                TENANT,
                EventCreate(
                    title="x", starts_at=datetime.now(UTC) + timedelta(days=9), currency="EUR"
                ),
            )
            paid = await catalog.create_ticket_type(
                conn,
                ADMIN,
                event["id"],
                TicketTypeCreate(
                    name="paid",
                    max_quantity=6,
                    price_tiers=[
                        {"quantity": 1, "total_amount": 700},
                        {"quantity": 2, "total_amount": 1300},
                        {"quantity": 3, "total_amount": 1800},
                    ],
                ),
            )
            free = await catalog.create_ticket_type(
                conn,
                ADMIN,
                event["id"],
                TicketTypeCreate(
                    name="free",
                    max_quantity=3,
                    price_tiers=[{"quantity": 1, "total_amount": 0}],
                    use_tenant_cancellation_policy=False,
                    cancellation_policy={"allow_cancellation": True},
                ),
            )
        return event["id"], paid["id"], free["id"]

    def _user(self) -> Principal:
        self.users += 1
        return Principal(sub=f"u{self.users}-{uuid.uuid4().hex[:6]}", email="u@example.test")

    # ---------------------------------------------------------------------------------- rules
    @rule(quantity=st.sampled_from([1, 2, 3]))
    def buy(self, quantity: int) -> None:
        result = self._run(self._register(self.tt_id, quantity))
        if result:
            self.orders.append(result[1]["order"]["id"])

    @rule()
    def register_free(self) -> None:
        result = self._run(self._register(self.free_tt_id, 1))
        if result:
            self.free_regs.append(result[1]["registration"]["id"])

    @precondition(lambda self: self.free_regs)
    @rule(data=st.data())
    def cancel_free(self, data: st.DataObject) -> None:
        reg_id = data.draw(st.sampled_from(self.free_regs))
        self._run(self._tx(registrations.cancel, ADMIN, uuid.UUID(reg_id), StaffAction()))

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), same_tx=st.booleans())
    def pay(self, data: st.DataObject, same_tx: bool) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        payment = PaymentSucceeded(
            order_id=order_id,
            tenant_id=TENANT,
            payment_id=uuid.uuid4(),
            provider="wechatpay",
            payment_method="NATIVE",
            transaction_id=f"tx-{order_id}" if same_tx else f"tx-{uuid.uuid4().hex}",
            amount=self._run(self._amount(order_id)),
            currency="EUR",
            paid_at=datetime.now(UTC),
        )
        self._run(self._tx(payment_outcome.apply_payment, payment))

    async def _amount(self, order_id: str) -> int:
        return int(
            await self.admin.fetchval(
                "SELECT total_amount FROM orders WHERE id = $1", uuid.UUID(order_id)
            )
        )

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def expire(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        self._run(
            self.admin.execute(
                "UPDATE orders SET expires_at = now() - interval '1 second' "
                "WHERE id = $1 AND status = 'PENDING'",
                uuid.UUID(order_id),
            )
        )
        self._run(self._tx(lifecycle.expire_due_orders, limit=100))

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def buyer_cancels(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        buyer = self._run(
            self.admin.fetchval("SELECT buyer_id FROM orders WHERE id = $1", uuid.UUID(order_id))
        )
        self._run(
            self._tx(lifecycle.cancel_pending_order, Principal(sub=buyer), uuid.UUID(order_id))
        )

    @precondition(lambda self: self.orders)
    @rule(data=st.data())
    def redeem(self, data: st.DataObject) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        token = self._run(
            self.admin.fetchval(
                "SELECT token FROM invites WHERE order_id = $1 ORDER BY status DESC LIMIT 1",
                uuid.UUID(order_id),
            )
        )
        if token:
            self._run(self._tx(invites.redeem, self._user(), token))

    @precondition(lambda self: self.orders)
    @rule(data=st.data(), full=st.booleans(), twice=st.booleans())
    def refund_settled(self, data: st.DataObject, full: bool, twice: bool) -> None:
        order_id = data.draw(st.sampled_from(self.orders))
        seats = self._run(
            self.admin.fetch(
                "SELECT id FROM seats WHERE order_id = $1 AND status = 'ACTIVE' ORDER BY position",
                uuid.UUID(order_id),
            )
        )
        if not seats:
            return
        chosen = (
            [s["id"] for s in seats]
            if full
            else [data.draw(st.sampled_from([s["id"] for s in seats]))]
        )
        refund = RefundCompleted(
            refund_id=uuid.uuid4(),
            order_id=order_id,
            tenant_id=TENANT,
            amount=100,
            currency="EUR",
            reason="organizer",
            voided_seat_ids=chosen,
            fully_refunded=full,
            refunded_at=datetime.now(UTC),
        )
        for _ in range(2 if twice else 1):
            self._run(self._tx(refund_outcome.apply_refund, refund))

    # ------------------------------------------------------------------------------ invariant
    @invariant()
    def inventory_matches_seats_and_registrations(self) -> None:
        async def check() -> None:
            async with self.admin.acquire() as conn:
                for row in await repo.inventory_report(conn):
                    if row["id"] in (self.tt_id, self.free_tt_id):
                        assert row["current_quantity"] == row["expected"], dict(row)
                        assert 0 <= row["current_quantity"] <= row["max_quantity"], dict(row)

        self._run(check())


def test_inventory_invariant_holds_under_random_interleavings(infra: Infra) -> None:
    loop = asyncio.new_event_loop()
    try:
        dsn = loop.run_until_complete(
            infra.fresh_database(
                "orders_stateful", db.shared_migrations() + db.dir_migrations("orders", MIGRATIONS)
            )
        )
        pool = loop.run_until_complete(db.create_pool(dsn, min_size=1, max_size=2))
        admin = loop.run_until_complete(
            db.create_pool(infra.admin_dsn(dsn), min_size=1, max_size=2)
        )
        InventoryMachine.loop, InventoryMachine.pool, InventoryMachine.admin = loop, pool, admin
        machine = InventoryMachine.TestCase
        machine.settings = settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        )
        machine().runTest()
        loop.run_until_complete(pool.close())
        loop.run_until_complete(admin.close())
    finally:
        loop.close()
