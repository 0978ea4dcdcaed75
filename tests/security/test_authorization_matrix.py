"""Who may do what, route by route, through the gateway of the running stack.

The routes come from each service's own route table, and each must have a row here: a route
added without deciding who may call it fails ``test_every_route_has_a_row``. Each row says, for
each kind of caller, whether the call is refused (401 anonymous, 403 a role too weak, 404 not
theirs to see: another tenant's or another buyer's things do not exist for them) or let through
to the use case (ALLOW: any answer but those, and never a 5xx: a 409 or 422 of the domain still
means the caller was allowed to ask).
"""

from __future__ import annotations

import importlib
import importlib.util
import secrets
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from tests.conftest import RefundShop, Stack
from ticketing_local import openapi

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALLOW = "allow"
ACTORS = (
    "anonymous",
    "other_buyer",
    "member",
    "foreign_admin",
    "buyer",
    "admin",
    "platform_admin",
)  # the refused first: a mutating call by an allowed caller comes after every refusal


def _row(**overrides: int | str) -> dict[str, int | str]:
    return {a: overrides.get(a, ALLOW) for a in ACTORS}


def staff(member: int = 403) -> dict[str, int | str]:
    """The tenant's owners and admins (and platform admins); a member is 403; outsiders 404."""
    return _row(anonymous=401, buyer=404, other_buyer=404, member=member, foreign_admin=404)


def tenant_member() -> dict[str, int | str]:
    """Anyone with a role in the tenant (and platform admins); outsiders 404."""
    return _row(anonymous=401, buyer=404, other_buyer=404, foreign_admin=404)


def signed_in() -> dict[str, int | str]:
    return _row(anonymous=401)


def buyer_or_staff() -> dict[str, int | str]:
    return _row(anonymous=401, other_buyer=404, member=404, foreign_admin=404)


def buyer_only() -> dict[str, int | str]:
    return _row(
        anonymous=401, other_buyer=404, member=404, foreign_admin=404, admin=404, platform_admin=404
    )


def refunds_staff() -> dict[str, int | str]:
    """The refunds service sees only its callers' tenants: a buyer or another tenant's admin
    finds nothing (404); a member finds the order but may not refund it (403)."""
    return _row(anonymous=401, buyer=404, other_buyer=404, member=403, foreign_admin=404)


def provider_signed(status: int) -> dict[str, int | str]:
    """Webhooks: no bearer token counts, only the provider's own proof (none here)."""
    return {a: status for a in ACTORS}


@dataclass
class World:
    """One tenant's things, made through the API: what every row's request names."""

    tenant: str
    event_id: str
    approval_event_id: str
    ticket_type_id: str
    template_id: str
    pending_order_id: str
    paid_order_id: str
    registration_id: str
    free_registration_id: str
    gift_seat_id: str
    invite_token: str
    refund_id: str


Request = Callable[[World], tuple[str, dict[str, Any]]]


def _get(path: str) -> Request:
    return lambda w: (path.format(**vars(w)), {})


def _post(path: str, body: Any = None, **headers: str) -> Request:
    def build(w: World) -> tuple[str, dict[str, Any]]:
        kw: dict[str, Any] = {"headers": headers} if headers else {}
        if body is not None:
            kw["json"] = body(w) if callable(body) else body
        return path.format(**vars(w)), kw

    return build


def _starts() -> str:
    return (datetime.now(UTC) + timedelta(days=40)).isoformat()


POLICY = {"allow_cancellation": True, "cutoff_days": 1, "cutoff_hours": 0}
TIERS = [{"quantity": 1, "total_amount": 500}]

# (service, method, path) → (who gets what, the request)
MATRIX: dict[tuple[str, str, str], tuple[dict[str, int | str], Request]] = {
    ("orders", "GET", "/v1/tenants/{tenant_id}/cancellation-policies"): (
        staff(),
        _get("/v1/tenants/{tenant}/cancellation-policies"),
    ),
    ("orders", "PUT", "/v1/tenants/{tenant_id}/cancellation-policies"): (
        staff(),
        _post("/v1/tenants/{tenant}/cancellation-policies", {"paid-regular": POLICY}),
    ),
    ("orders", "GET", "/v1/tenants/{tenant_id}/events"): (
        tenant_member(),
        _get("/v1/tenants/{tenant}/events"),
    ),
    ("orders", "GET", "/v1/tenants/{tenant_id}/event-templates"): (
        tenant_member(),
        _get("/v1/tenants/{tenant}/event-templates"),
    ),
    ("orders", "GET", "/v1/events/{event_id}/registrations.csv"): (
        staff(),
        _get("/v1/events/{event_id}/registrations.csv"),
    ),
    ("orders", "GET", "/v1/events/{event_id}/audit"): (
        staff(),
        _get("/v1/events/{event_id}/audit"),
    ),
    ("refunds", "GET", "/v1/events/{event_id}/refunds"): (
        refunds_staff(),
        _get("/v1/events/{event_id}/refunds"),
    ),
    ("orders", "POST", "/v1/tenants/{tenant_id}/event-templates"): (
        staff(),
        _post(
            "/v1/tenants/{tenant}/event-templates",
            {"title": "T", "currency": "CNY", "ticket_types": []},
        ),
    ),
    ("orders", "POST", "/v1/event-templates/{template_id}/events"): (
        staff(),
        _post("/v1/event-templates/{template_id}/events", lambda w: {"starts_at": _starts()}),
    ),
    ("orders", "POST", "/v1/tenants/{tenant_id}/events"): (
        staff(),
        _post(
            "/v1/tenants/{tenant}/events",
            lambda w: {"title": "E", "starts_at": _starts(), "currency": "CNY"},
        ),
    ),
    ("orders", "GET", "/v1/events/{event_id}"): (signed_in(), _get("/v1/events/{event_id}")),
    ("orders", "PATCH", "/v1/events/{event_id}"): (
        staff(),
        _post("/v1/events/{event_id}", {"title": "Renamed"}),
    ),
    ("orders", "POST", "/v1/events/{event_id}/ticket-types"): (
        staff(),
        _post(
            "/v1/events/{event_id}/ticket-types",
            {"name": "Extra", "max_quantity": 5, "price_tiers": TIERS},
        ),
    ),
    ("orders", "PATCH", "/v1/ticket-types/{ticket_type_id}"): (
        staff(),
        _post("/v1/ticket-types/{ticket_type_id}", {"name": "Renamed"}),
    ),
    ("orders", "POST", "/v1/events/{event_id}/registrations"): (
        signed_in(),
        _post(
            "/v1/events/{event_id}/registrations",
            lambda w: {"ticket_type_id": w.ticket_type_id, "quantity": 1},
        ),
    ),
    ("orders", "GET", "/v1/orders/{order_id}"): (
        buyer_or_staff(),
        _get("/v1/orders/{paid_order_id}"),
    ),
    ("orders", "GET", "/v1/me/orders"): (signed_in(), _get("/v1/me/orders")),
    ("orders", "POST", "/v1/orders/{order_id}/cancel"): (
        buyer_only(),
        _post("/v1/orders/{pending_order_id}/cancel"),
    ),
    ("orders", "POST", "/v1/orders/{order_id}/seats/{seat_id}/cancel"): (
        buyer_only(),
        _post("/v1/orders/{paid_order_id}/seats/{gift_seat_id}/cancel"),
    ),
    ("orders", "GET", "/v1/orders/{order_id}/audit"): (
        staff(),
        _get("/v1/orders/{paid_order_id}/audit"),
    ),
    ("orders", "GET", "/v1/orders/{order_id}/invites"): (
        buyer_only(),
        _get("/v1/orders/{paid_order_id}/invites"),
    ),
    ("orders", "POST", "/v1/invites/{token}/redeem"): (
        signed_in(),
        _post("/v1/invites/{invite_token}/redeem"),
    ),
    ("orders", "GET", "/v1/events/{event_id}/registrations"): (
        staff(),
        _get("/v1/events/{event_id}/registrations"),
    ),
    ("orders", "GET", "/v1/registrations/{registration_id}"): (
        buyer_or_staff(),
        _get("/v1/registrations/{registration_id}"),
    ),
    ("orders", "POST", "/v1/registrations/{registration_id}/approve"): (
        staff(),
        _post("/v1/registrations/{free_registration_id}/approve"),
    ),
    ("orders", "POST", "/v1/registrations/{registration_id}/reject"): (
        staff(),
        _post("/v1/registrations/{free_registration_id}/reject"),
    ),
    ("orders", "POST", "/v1/registrations/{registration_id}/cancel"): (
        # the registrant, or the tenant's staff: a member is known to the tenant, but too weak
        _row(anonymous=401, other_buyer=404, member=403, foreign_admin=404),
        _post("/v1/registrations/{free_registration_id}/cancel"),
    ),
    ("payments", "POST", "/v1/orders/{order_id}/payments"): (
        buyer_only(),
        _post("/v1/orders/{pending_order_id}/payments", {"provider": "wechatpay"}),
    ),
    ("payments", "GET", "/v1/orders/{order_id}/payments"): (
        buyer_or_staff(),
        _get("/v1/orders/{paid_order_id}/payments"),
    ),
    ("payments", "POST", "/v1/webhooks/wechatpay"): (
        provider_signed(401),
        _post("/v1/webhooks/wechatpay", {"id": "x", "resource": {}}),
    ),
    ("payments", "POST", "/v1/webhooks/mollie"): (
        provider_signed(200),  # a well-formed id, ours or not: nothing leaks
        lambda w: ("/v1/webhooks/mollie", {"data": {"id": "tr_unknown"}}),
    ),
    ("refunds", "POST", "/v1/orders/{order_id}/refunds"): (
        refunds_staff(),
        lambda w: (
            f"/v1/orders/{w.paid_order_id}/refunds",
            {
                "json": {"amount": 100, "reason": "organizer"},
                "headers": {"Idempotency-Key": secrets.token_hex(8)},
            },
        ),
    ),
    ("refunds", "GET", "/v1/orders/{order_id}/refunds"): (
        # the order's buyer sees its refunds too; a member is refused, other people find nothing
        _row(anonymous=401, other_buyer=404, member=403, foreign_admin=404),
        _get("/v1/orders/{paid_order_id}/refunds"),
    ),
    ("refunds", "GET", "/v1/refunds/{refund_id}"): (
        refunds_staff(),
        _get("/v1/refunds/{refund_id}"),
    ),
    ("refunds", "POST", "/v1/refunds/{refund_id}/cancel"): (
        refunds_staff(),
        _post("/v1/refunds/{refund_id}/cancel"),
    ),
}


def _routes() -> set[tuple[str, str, str]]:
    """Every route of every service's API: the app's own routes, its service's router and
    whatever else its OpenAPI document names (the apps are built, not started)."""
    from orders.settings import Settings as OrdersSettings

    found = set()
    for service in ("orders", "payments", "refunds", "notifications"):
        settings_cls = importlib.import_module(f"{service}.settings").Settings
        settings = (
            OrdersSettings(invite_secret=secrets.token_hex(32))
            if service == "orders"
            else settings_cls()
        )
        app = importlib.import_module(f"{service}.api").create_app(settings)
        routes = list(app.routes)
        if importlib.util.find_spec(f"{service}.routes") is not None:
            routes += importlib.import_module(f"{service}.routes").router.routes
        for route in routes:
            if isinstance(route, APIRoute):
                found |= {(service, m, route.path) for m in route.methods - {"HEAD"}}
        for path, operations in app.openapi()["paths"].items():
            found |= {(service, m.upper(), path) for m in operations}
    return found


async def test_every_route_has_a_row() -> None:
    """A route nobody decided who may call is a failure here, not an open door."""
    routes = {r for r in _routes() if r[2].startswith("/v1/")}
    assert routes == set(MATRIX), {
        "without a row": sorted(routes - set(MATRIX)),
        "rows of no route": sorted(set(MATRIX) - routes),
    }


async def test_the_operators_endpoints_are_not_routed_through_the_gateway(stack: Stack) -> None:
    others = {r for r in _routes() if not r[2].startswith("/v1/")}
    assert {path for _, _, path in others} == {"/healthz", "/readyz", "/metrics"}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=10) as c:
        for path in ("/metrics", "/readyz"):
            assert (await c.get(path)).status_code == 404
        # the gateway's own document (every public operation, merged), not any service's
        served = await c.get("/openapi.json")
        assert served.content == openapi.MERGED.read_bytes()
        assert all(p.startswith("/v1/") for p in served.json()["paths"])


@pytest.fixture(scope="module")
async def world(stack: Stack) -> AsyncIterator[World]:
    tenant = f"t-authz-{uuid.uuid4().hex[:6]}"
    shop = RefundShop(stack, tenant)
    admin = shop.admin
    assert (
        await admin.put(
            f"/v1/tenants/{tenant}/cancellation-policies", json={"free-regular": POLICY}
        )
    ).status_code == 200
    async with shop.client("authz-buyer") as buyer:
        paid = await shop.paid_order(buyer, quantity=3)
        pending = await shop.order(buyer, quantity=1)
        invites = (await buyer.get(f"/v1/orders/{paid['id']}/invites")).json()
        approval = await admin.post(
            f"/v1/tenants/{tenant}/events",
            json={
                "title": "Approval",
                "starts_at": _starts(),
                "currency": "CNY",
                "require_approval": True,
            },
        )
        free_tt = await admin.post(
            f"/v1/events/{approval.json()['id']}/ticket-types",
            json={
                "name": "Free",
                "max_quantity": 10,
                "price_tiers": [{"quantity": 1, "total_amount": 0}],
            },
        )
        free = await buyer.post(
            f"/v1/events/{approval.json()['id']}/registrations",
            json={"ticket_type_id": free_tt.json()["id"], "quantity": 1},
        )
        assert free.status_code == 201, free.text
    template = await admin.post(
        f"/v1/tenants/{tenant}/event-templates",
        json={"title": "Tpl", "currency": "CNY", "ticket_types": []},
    )
    refund = await shop.refund(paid["id"], {"amount": 100})
    assert refund.status_code == 201, refund.text
    yield World(
        tenant=tenant,
        event_id=paid["event_id"],
        approval_event_id=approval.json()["id"],
        ticket_type_id=paid["ticket_type_id"],
        template_id=template.json()["id"],
        pending_order_id=pending["id"],
        paid_order_id=paid["id"],
        registration_id=paid["registrations"][0]["id"],
        free_registration_id=free.json()["registration"]["id"],
        gift_seat_id=paid["seats"][1]["id"],
        invite_token=invites[0]["token"],
        refund_id=refund.json()["id"],
    )
    await admin.aclose()


def _caller(stack: Stack, world: World, actor: str) -> dict[str, str]:
    claims: dict[str, Any] = {
        "buyer": {"sub": "authz-buyer"},
        "other_buyer": {"sub": f"authz-stranger-{uuid.uuid4().hex[:6]}"},
        "member": {"sub": "authz-member", "roles": {world.tenant: "member"}},
        "admin": {"sub": "authz-admin", "roles": {world.tenant: "admin"}},
        "foreign_admin": {"sub": "authz-foreigner", "roles": {"t-authz-elsewhere": "owner"}},
        "platform_admin": {"sub": "authz-root", "platform_admin": True},
    }.get(actor, {})
    if not claims:
        return {}
    sub = claims.pop("sub")
    token = stack.token(sub, email=f"{sub}@example.test", **claims)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("route", sorted(MATRIX), ids=lambda r: f"{r[1]} {r[2]}")
async def test_who_may_call_it(stack: Stack, world: World, route: tuple[str, str, str]) -> None:
    expected, build = MATRIX[route]
    _, method, _ = route
    got: dict[str, int | str] = {}
    async with httpx.AsyncClient(base_url=stack.gateway, timeout=30) as c:
        for actor in ACTORS:
            url, kw = build(world)
            kw["headers"] = {**kw.get("headers", {}), **_caller(stack, world, actor)}
            resp = await c.request(method, url, **kw)
            assert resp.status_code < 500, (actor, resp.status_code, resp.text)
            let_through = expected[actor] == ALLOW and resp.status_code not in (401, 403, 404)
            got[actor] = ALLOW if let_through else resp.status_code
    assert got == expected
