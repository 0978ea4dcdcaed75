"""``python -m ticketing_local up|down|status|token|supervise`` — the embedded local stack.

``up`` generates dev keys, starts a private PostgreSQL cluster (one database per service) and
applies migrations, then starts the supervisor in the background (broker, SMTP sink, the four
services' api and worker, nginx) and returns once every part answers its health check.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from ticketing_local.embedded import EmbeddedBroker, EmbeddedPostgres, port_open
from ticketing_shared import db
from ticketing_shared.auth import TENANT_ID_PATTERN, mint_token

from . import supervisor
from .keys import ensure_keys
from .stack import (
    PATHS,
    REPO,
    SERVICES,
    components,
    pg_dsn,
    port,
    render_gateway,
    service_env,
)


def _postgres() -> EmbeddedPostgres:
    return EmbeddedPostgres(PATHS.pg, port("POSTGRES_PORT"), log_file=PATHS.logs / "postgres.log")


def _broker_argv() -> list[str]:
    return EmbeddedBroker(port("KAFKA_PORT")).command()


def _supervisor_pid() -> int | None:
    try:
        pid = int(PATHS.supervisor_pid.read_text())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None


async def _migrate_all() -> None:
    admin = pg_dsn("postgres")
    for svc in SERVICES:
        owner = db.owner_role(svc)
        await db.ensure_database(admin, svc, owner=owner, runtime=svc)
        mig = db.shared_migrations() + db.dir_migrations(
            svc, REPO / "services" / svc / "migrations"
        )
        applied = await db.migrate(pg_dsn(svc, role=owner), mig, runtime_role=svc)
        print(f"  {svc}: {len(applied)} migration(s) applied")


def _wait_healthy(timeout: float) -> list[str]:
    comps = components(_broker_argv())
    deadline = time.monotonic() + timeout
    pending = {c.name: c for c in comps}
    with httpx.Client(timeout=2) as client:
        while pending and time.monotonic() < deadline:
            if _supervisor_pid() is None:
                raise SystemExit("the supervisor died; see run/logs/supervisor.log")
            for name, c in list(pending.items()):
                ok = False
                if c.health_url:
                    try:
                        ok = client.get(c.health_url).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                elif c.health_port:
                    ok = port_open(c.health_port)
                if ok:
                    del pending[name]
            time.sleep(0.2)
    return sorted(pending)


def up(timeout: float) -> int:
    PATHS.logs.mkdir(parents=True, exist_ok=True)
    if _supervisor_pid() is not None:
        print("the stack is already running")
    else:
        busy = [
            p
            for p in ("GATEWAY_PORT", "KAFKA_PORT", "ORDERS_API_PORT", "MAIL_SMTP_PORT")
            if port_open(port(p))
        ]
        if busy:
            raise SystemExit(f"ports already in use: {', '.join(f'{b}={port(b)}' for b in busy)}")
        ensure_keys(PATHS.keys)
        print("PostgreSQL: starting the private cluster")
        _postgres().start()
        asyncio.run(_migrate_all())
        render_gateway()
        log = open(PATHS.logs / "supervisor.out", "ab")  # noqa: SIM115
        subprocess.Popen(
            [sys.executable, "-m", "ticketing_local", "supervise"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while _supervisor_pid() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    missing = _wait_healthy(timeout)
    if missing:
        print(
            f"not healthy after {timeout:.0f}s: {', '.join(missing)} (see run/logs/)",
            file=sys.stderr,
        )
        return 1
    _print_urls(_seed_demo())
    return 0


DEMO_TENANT = "demo-tenant"


def _dev_token(private_pem: str, **claims: Any) -> str:
    """A token of the local stack's identity: its issuer and audience, as the services verify."""
    env = service_env()
    return mint_token(private_pem, issuer=env["JWT_ISSUER"], audience=env["JWT_AUDIENCE"], **claims)


def _demo_admin_token() -> str:
    return _dev_token(
        (PATHS.keys / "jwt-private.pem").read_text(),
        sub="demo-admin",
        email="admin@example.test",
        roles={DEMO_TENANT: "owner"},
    )


def _seed_demo() -> str:
    """A demo tenant with a policy and an event (paid and free ticket types), once; its event id."""

    async def existing() -> str | None:
        conn = await asyncpg.connect(pg_dsn("orders"))
        try:
            found = await conn.fetchval(
                "SELECT id FROM events WHERE tenant_id = $1 ORDER BY created_at LIMIT 1",
                DEMO_TENANT,
            )
            return str(found) if found else None
        finally:
            await conn.close()

    if found := asyncio.run(existing()):
        return found
    token = _demo_admin_token()
    policy = {
        "allow_cancellation": True,
        "include_transaction_fees": False,
        "include_app_fees": False,
        "cutoff_days": 2,
        "cutoff_hours": 0,
    }
    base = f"http://127.0.0.1:{port('GATEWAY_PORT')}"
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=10) as c:
        c.put(
            f"/v1/tenants/{DEMO_TENANT}/cancellation-policies",
            json={"paid-regular": policy, "free-regular": policy},
        ).raise_for_status()
        starts = (datetime.now(UTC) + timedelta(days=30)).replace(
            hour=19, minute=0, second=0, microsecond=0
        )
        event = c.post(
            f"/v1/tenants/{DEMO_TENANT}/events",
            json={
                "title": "Demo concert",
                "starts_at": starts.isoformat(),
                "require_approval": False,
                "currency": "CNY",
            },
        )
        event.raise_for_status()
        event_id = str(event.json()["id"])
        standard = [{"quantity": 1, "total_amount": 9900}, {"quantity": 2, "total_amount": 18800}]
        for body in (
            {"name": "Standard", "max_quantity": 200, "price_tiers": standard},
            {
                "name": "Free rehearsal",
                "max_quantity": 50,
                "price_tiers": [{"quantity": 1, "total_amount": 0}],
            },
        ):
            c.post(f"/v1/events/{event_id}/ticket-types", json=body).raise_for_status()
    return event_id


def _print_urls(demo_event: str) -> None:
    token = _demo_admin_token()
    print(
        f"""
The ticketing stack is up.
  gateway        http://127.0.0.1:{port("GATEWAY_PORT")}
  orders         http://127.0.0.1:{port("ORDERS_API_PORT")}   (worker :{port("ORDERS_WORKER_PORT")})
  payments       http://127.0.0.1:{port("PAYMENTS_API_PORT")}   (worker :{port("PAYMENTS_WORKER_PORT")})
  refunds        http://127.0.0.1:{port("REFUNDS_API_PORT")}   (worker :{port("REFUNDS_WORKER_PORT")})
  notifications  http://127.0.0.1:{port("NOTIFICATIONS_API_PORT")}   (worker :{port("NOTIFICATIONS_WORKER_PORT")})
  mail inbox     http://127.0.0.1:{port("MAIL_HTTP_PORT")}/messages   (SMTP :{port("MAIL_SMTP_PORT")})
  WeChat Pay     http://127.0.0.1:{port("WECHAT_SANDBOX_PORT")}   (sandbox; control API under /sandbox/)
  Mollie         http://127.0.0.1:{port("MOLLIE_SANDBOX_PORT")}   (sandbox; control API under /sandbox/)
  PostgreSQL     {pg_dsn("<service>")}
  Kafka          127.0.0.1:{port("KAFKA_PORT")}
  logs           {PATHS.logs}

Demo event (tenant "demo-tenant"): http://127.0.0.1:{port("GATEWAY_PORT")}/v1/events/{demo_event}

A token for tenant "demo-tenant" (owner):
  {token}
Stop with: make down"""
    )


def down() -> int:
    pid = _supervisor_pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 40
        while _supervisor_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if _supervisor_pid() is not None:
            os.kill(pid, signal.SIGKILL)
    if PATHS.pg.exists() or _postgres().initialized():
        _postgres().stop()
    print("the stack is stopped")
    return 0


def status() -> int:
    if _supervisor_pid() is None:
        print("not running")
        return 1
    print(PATHS.state.read_text() if PATHS.state.exists() else "starting")
    return 0


def token(args: argparse.Namespace) -> int:
    roles = {}
    for item in filter(None, (args.roles or "").split(",")):
        tenant, _, role = item.partition(":")
        if not re.fullmatch(TENANT_ID_PATTERN, tenant):
            raise SystemExit(f"bad tenant id in {item!r}: letters, digits, '.', '_', '-' (≤ 64)")
        if role not in ("owner", "admin", "member"):
            raise SystemExit(f"bad role in {item!r}: use tenant-id:owner|admin|member")
        roles[tenant] = role
    keys = ensure_keys(PATHS.keys)
    print(
        _dev_token(
            keys["jwt_private"].read_text(),
            sub=args.sub,
            email=args.email or f"{args.sub}@example.test",
            locale=args.locale,
            roles=roles,
            platform_admin=args.platform_admin,
            wechat_openid=args.openid or None,
            ttl_seconds=args.ttl,
        )
    )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m ticketing_local")
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the stack in the background")
    p_up.add_argument("--timeout", type=float, default=180)
    sub.add_parser("down", help="stop everything the stack started")
    sub.add_parser("status", help="show the supervised processes")
    sub.add_parser("supervise", help="(internal) run the supervisor in the foreground")
    p_tok = sub.add_parser("token", help="print a dev JWT")
    p_tok.add_argument("--sub", default="demo-user")
    p_tok.add_argument("--roles", default="", help="tenant-id:owner|admin|member,…")
    p_tok.add_argument("--email", default="")
    p_tok.add_argument("--locale", default="en")
    p_tok.add_argument("--openid", default="")
    p_tok.add_argument("--platform-admin", action="store_true")
    p_tok.add_argument("--ttl", type=int, default=12 * 3600)
    args = parser.parse_args()
    if args.command == "up":
        sys.exit(up(args.timeout))
    if args.command == "down":
        sys.exit(down())
    if args.command == "status":
        sys.exit(status())
    if args.command == "token":
        sys.exit(token(args))
    if args.command == "supervise":
        supervisor.main(components(_broker_argv()))


if __name__ == "__main__":
    main()
