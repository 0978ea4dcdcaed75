"""Registration and purchase: free seats and paid multi-seat orders; inventory never oversold.

The one contended row is the ticket type's inventory. The purchase is therefore ONE statement
run as its own transaction (autocommit): ``purchase_seats()`` writes the order, seats,
registration, invites, audit trail, the outbox event and the Idempotency-Key with its
precomputed response, and takes the seats with a conditional UPDATE LAST. The row lock lasts
only while that statement commits, never across a round trip to this process (where an event
loop busy with other requests would stretch it). Sold out: the statement fails and nothing is
written. Everything else (the catalog
read, the response) is computed before, without locks. This is why these use cases take a
plain connection instead of a transaction. The catalog read is kept in memory between purchases
(``PurchaseCatalog``), checked by the statement against the ticket type's catalog version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from ticketing_shared import idempotency
from ticketing_shared.auth import Principal
from ticketing_shared.contracts import OrderCreated, SeatInfo
from ticketing_shared.errors import DomainError, NotFound
from ticketing_shared.idempotency import IdempotentRequest
from ticketing_shared.invite_links import InviteLinks, digest
from ticketing_shared.writes import OutboxEvent

from .. import repository as repo
from ..domain import AuditEntry, effective_policy, is_free, tier_price
from ..errors import AlreadyRegistered, CatalogChanged, InventoryExhausted, QuantityNotAllowed
from ..schemas import RegistrationCreate, RegistrationCreated
from . import views
from .common import SOURCE, actor, new_id, now


class PurchaseCatalog:
    """Each ticket type's purchase context (``repo.purchase_context``), kept in this process.

    A purchase priced from a kept copy passes the copy's ``catalog_version`` to its statement,
    which takes the seats only while that version is current (the catalog triggers bump it on every
    change of what the copy holds). So a kept copy is never trusted on its own: a purchase it
    priced from an outdated catalog fails whole and is decided again on a fresh read, and so is
    every refusal it led to (its inventory is a hint, as old as the copy). This saves a round
    trip per purchase. After a sell-out, a purchase still reads the inventory, as it always did.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._kept: dict[UUID, asyncpg.Record] = {}

    def kept(self, ticket_type_id: UUID) -> asyncpg.Record | None:
        return self._kept.get(ticket_type_id)

    async def read(self, conn: asyncpg.Connection, ticket_type_id: UUID) -> asyncpg.Record | None:
        ctx = await repo.purchase_context(conn, ticket_type_id)
        if ctx is None:
            self._kept.pop(ticket_type_id, None)
            return None
        if len(self._kept) >= self.max_entries and ticket_type_id not in self._kept:
            self._kept.clear()
        self._kept[ticket_type_id] = ctx
        return ctx


# refusals a kept catalog copy can be wrong about: decided again on a fresh read (a free
# registration's unique index answers before the statement's version check: a ticket type made
# paid since the copy was read must sell its holder an order, not say "already registered")
_FROM_THE_COPY = (
    NotFound,
    QuantityNotAllowed,
    InventoryExhausted,
    AlreadyRegistered,
    repo.CatalogMoved,
)
_ATTEMPTS = 4  # the kept copy's, then fresh reads' (a catalog being changed right then)


async def register(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID,
    body: RegistrationCreate,
    *,
    catalog: PurchaseCatalog,
    links: InviteLinks,
    order_ttl: timedelta,
    max_quantity_per_order: int,
    idem: IdempotentRequest | None = None,
) -> tuple[int, dict[str, Any], bool]:
    """Free ticket → registration; paid → PENDING order + buyer registration + LOCKED invites.

    ``conn`` must be a plain connection, not inside a transaction: each attempt is its own
    self-committing statement, and one that fails is followed by a fresh read and a retry.

    Returns (status, body, replayed). Priced from the catalog kept in ``catalog`` when there is
    a copy, else (and whenever the copy may be outdated) from a fresh read. A request whose
    Idempotency-Key already holds a response replays it. That is found where it costs nothing
    on the way of a new purchase: the write fails on the key's unique index (a duplicate of a
    completed purchase, or one that waited for a concurrent one), and every refusal (sold out
    since, already registered, ...) looks the key up before answering.
    """
    try:
        ctx = catalog.kept(body.ticket_type_id)
        fresh = ctx is None
        for _ in range(_ATTEMPTS):
            if fresh:
                ctx = await catalog.read(conn, body.ticket_type_id)
            try:
                return await _register(
                    conn,
                    principal,
                    event_id,
                    body,
                    ctx,
                    order_ttl,
                    max_quantity_per_order,
                    idem,
                    links,
                )
            except _FROM_THE_COPY as exc:
                # what the copy led to is decided again on a fresh read; what a fresh read led
                # to stands, unless the catalog changed between the read and the write
                if fresh and not isinstance(exc, repo.CatalogMoved):
                    raise
                fresh = True
        raise CatalogChanged("the ticket type changed while buying; try again")
    except DomainError:
        if (stored := await _replay(conn, idem)) is not None:
            return stored.status, stored.body, True
        raise


async def _register(
    conn: asyncpg.Connection,
    principal: Principal,
    event_id: UUID,
    body: RegistrationCreate,
    ctx: asyncpg.Record | None,
    order_ttl: timedelta,
    max_quantity_per_order: int,
    idem: IdempotentRequest | None,
    links: InviteLinks,
) -> tuple[int, dict[str, Any], bool]:
    if ctx is None or ctx["event_id"] != event_id or ctx["event_status"] != "published":
        raise NotFound("ticket type not found for this event")
    tiers = {int(t["quantity"]): int(t["total_amount"]) for t in ctx["price_tiers"]}
    free = is_free(tiers)
    if free and body.quantity != 1:
        raise QuantityNotAllowed("free tickets are registered one seat per person (quantity 1)")
    total = tier_price(tiers, body.quantity)
    if body.quantity > max_quantity_per_order:
        raise QuantityNotAllowed(f"at most {max_quantity_per_order} seats per order")
    if ctx["current_quantity"] + body.quantity > ctx["max_quantity"]:
        # early answer from a possibly stale read; the conditional UPDATE is the real guard
        raise InventoryExhausted(
            f"only {max(0, ctx['max_quantity'] - ctx['current_quantity'])} seat(s) left"
        )

    policy, source = effective_policy(
        tenant_policies=ctx["tenant_policies"],
        use_tenant_policy=ctx["use_tenant_cancellation_policy"],
        own_policy=ctx["cancellation_policy"],
        paid=not free,
        organizer=ctx["organizer_registration"],
    )
    at = now()
    if free:
        return await _register_free(conn, principal, ctx, policy.as_dict(), source, at, idem)
    return await _purchase(
        conn,
        principal,
        ctx,
        body.quantity,
        total,
        policy.as_dict(),
        source,
        at,
        order_ttl,
        idem,
        links,
    )


def _wire(response: dict[str, Any]) -> dict[str, Any]:
    """The response exactly as sent (and as replayed): JSON types, the public model's shape."""
    return RegistrationCreated.model_validate(response).model_dump(mode="json")


async def _replay(
    conn: asyncpg.Connection, idem: IdempotentRequest | None
) -> idempotency.StoredResponse | None:
    if idem is None:
        return None
    return await idempotency.lookup(
        conn, scope=idem.scope, key=idem.key, fingerprint=idem.fingerprint
    )


def _keyed(
    idem: IdempotentRequest | None, status: int, body: dict[str, Any]
) -> idempotency.KeyedResponse | None:
    return None if idem is None else idempotency.KeyedResponse.answering(idem, status, body)


async def _write_once(
    conn: asyncpg.Connection, idem: IdempotentRequest | None, write: Callable[[], Awaitable[bool]]
) -> tuple[bool, idempotency.StoredResponse | None]:
    """Run the one-statement write; (taken, replay) where replay is set when a concurrent request
    with the same key won the race."""
    try:
        return await write(), None
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "idempotency_keys_pkey" and idem is not None:
            return False, await _replay(conn, idem)
        if exc.constraint_name == "registrations_one_free_per_user":
            raise AlreadyRegistered("you already hold a registration for this ticket type") from exc
        raise


async def _register_free(
    conn: asyncpg.Connection,
    principal: Principal,
    ctx: asyncpg.Record,
    policy: dict[str, Any],
    source: str,
    at: Any,
    idem: IdempotentRequest | None,
) -> tuple[int, dict[str, Any], bool]:
    # a second live free registration of the same person is refused by a unique index inside the
    # write (AlreadyRegistered): no read before it, and no race between two double clicks
    reg = repo.FreeRegistration(
        id=new_id(),
        tenant_id=ctx["tenant_id"],
        event_id=ctx["event_id"],
        ticket_type_id=ctx["id"],
        user_id=principal.sub,
        email=principal.email,
        name=principal.name,
        locale=principal.locale,
        status="PENDING" if ctx["require_approval"] else "APPROVED",
        cancellation_policy=policy,
        policy_source=source,
        created_at=at,
    )
    view = {
        **vars(reg),
        "order_id": None,
        "seat_id": None,
        "cancellation_reason": None,
        "cancellation_reason_note": None,
        "cancelled_at": None,
        "cancellation_requested_at": None,
        "event_starts_at": ctx["starts_at"],
        "order_currency": ctx["currency"],
    }
    response = _wire({"registration": views.registration_public(view, at=at), "order": None})
    seat = repo.FreeSeat(
        registration=reg,
        audit=[
            AuditEntry(
                reg.tenant_id,
                None,
                "registration",
                str(reg.id),
                actor(principal),
                "registration.created",
                to_status=reg.status,
                details={"ticket_type_id": str(ctx["id"]), "free": True},
            )
        ],
        idempotency=_keyed(idem, 201, response),
        catalog_version=ctx["catalog_version"],
    )
    taken, stored = await _write_once(conn, idem, lambda: repo.create_free_registration(conn, seat))
    if stored is not None:
        return stored.status, stored.body, True
    if not taken:
        raise InventoryExhausted("no seats left")
    return 201, response, False


async def _purchase(
    conn: asyncpg.Connection,
    principal: Principal,
    ctx: asyncpg.Record,
    quantity: int,
    total: int,
    policy: dict[str, Any],
    source: str,
    at: Any,
    order_ttl: timedelta,
    idem: IdempotentRequest | None,
    links: InviteLinks,
) -> tuple[int, dict[str, Any], bool]:
    order_id = new_id()
    seat_ids = [new_id() for _ in range(quantity)]
    registration_id = new_id()
    # the database keeps a digest of each token, never the token (invite_links)
    invite_ids = [new_id() for _ in seat_ids[1:]]
    invites = [
        repo.NewInvite(iid, seat_id, digest(links.token(iid)))
        for iid, seat_id in zip(invite_ids, seat_ids[1:], strict=True)
    ]
    currency = ctx["currency"].strip()
    order = repo.NewOrder(
        id=order_id,
        tenant_id=ctx["tenant_id"],
        event_id=ctx["event_id"],
        ticket_type_id=ctx["id"],
        buyer_id=principal.sub,
        buyer_email=principal.email,
        buyer_locale=principal.locale,
        quantity=quantity,
        total_amount=total,
        currency=currency,
        expires_at=at + order_ttl,
        created_at=at,
    )
    reg_view = {
        "id": registration_id,
        "event_id": ctx["event_id"],
        "ticket_type_id": ctx["id"],
        "order_id": order_id,
        "seat_id": seat_ids[0],
        "user_id": principal.sub,
        "status": "PENDING_PAYMENT",
        "cancellation_reason": None,
        "cancellation_reason_note": None,
        "cancelled_at": None,
        "cancellation_requested_at": None,
        "cancellation_policy": policy,
        "policy_source": source,
        "created_at": at,
        "event_starts_at": ctx["starts_at"],
        "order_status": "PENDING",
        "total_amount": total,
        "refunded_amount": 0,
        "transaction_fee": 0,
        "app_fee": 0,
        "order_quantity": quantity,
        "order_currency": currency,
        "seat_position": 1,
    }
    order_view = views.order_public(
        {
            **vars(order),
            "status": "PENDING",
            "refunded_amount": 0,
            "paid_at": None,
            "transaction_id": None,
            "payment_provider": None,
            "payment_method": None,
        },
        seats=[{"id": s, "status": "ACTIVE", "position": i + 1} for i, s in enumerate(seat_ids)],
        registrations=[
            {
                "id": registration_id,
                "status": "PENDING_PAYMENT",
                "user_id": principal.sub,
                "seat_id": seat_ids[0],
            }
        ],
        invites=[{"status": "LOCKED", "seat_id": i.seat_id} for i in invites],
    )
    response = _wire(
        {"registration": views.registration_public(reg_view, at=at), "order": order_view}
    )
    created = OrderCreated(
        order_id=order_id,
        tenant_id=ctx["tenant_id"],
        event_id=ctx["event_id"],
        ticket_type_id=ctx["id"],
        buyer_id=principal.sub,
        buyer_email=principal.email,
        buyer_locale=principal.locale,
        quantity=quantity,
        total_amount=total,
        currency=currency,
        expires_at=order.expires_at,
        event_title=ctx["event_title"],
        event_starts_at=ctx["starts_at"],
        seats=[
            SeatInfo(seat_id=s, registration_id=registration_id if i == 0 else None)
            for i, s in enumerate(seat_ids)
        ],
    )
    who = actor(principal)
    tenant = ctx["tenant_id"]
    purchase = repo.Purchase(
        order=order,
        seat_ids=seat_ids,
        registration=repo.BuyerRegistration(
            id=registration_id,
            name=principal.name,
            cancellation_policy=policy,
            policy_source=source,
        ),
        invites=invites,
        events=[OutboxEvent.of(created, subject=order_id, source=SOURCE)],
        audit=[
            AuditEntry.about_order(
                tenant,
                order_id,
                actor=who,
                action="order.created",
                to_status="PENDING",
                details={"quantity": quantity, "total_amount": total, "currency": currency},
            ),
            AuditEntry(
                tenant,
                order_id,
                "registration",
                str(registration_id),
                who,
                "registration.created",
                to_status="PENDING_PAYMENT",
                details={"seat_id": str(seat_ids[0])},
            ),
            *[
                AuditEntry(
                    tenant,
                    order_id,
                    "invite",
                    str(i.id),
                    who,
                    "invite.created",
                    to_status="LOCKED",
                    details={"seat_id": str(i.seat_id)},
                )
                for i in invites
            ],
        ],
        idempotency=_keyed(idem, 201, response),
        catalog_version=ctx["catalog_version"],
    )
    taken, stored = await _write_once(conn, idem, lambda: repo.create_paid_order(conn, purchase))
    if stored is not None:
        return stored.status, stored.body, True
    if not taken:
        raise InventoryExhausted(f"not enough seats left for {quantity}")
    return 201, response, False
