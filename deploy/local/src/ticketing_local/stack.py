"""What the local stack is made of: ports, folders, and the command line of each process.

Every port can be moved with an environment variable of the same name (``GATEWAY_PORT=9080``);
the defaults are the README's.
"""

from __future__ import annotations

import getpass
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from ticketing_shared import db
from ticketing_shared.auth import DEV_AUDIENCE, DEV_ISSUER

REPO = Path(__file__).resolve().parents[4]
RUN = Path(os.environ.get("TICKETING_RUN_DIR", REPO / "run"))
SERVICES = ("orders", "payments", "refunds", "notifications")

DEFAULT_PORTS = {
    "GATEWAY_PORT": 8080,
    "ORDERS_API_PORT": 8001,
    "PAYMENTS_API_PORT": 8002,
    "REFUNDS_API_PORT": 8003,
    "NOTIFICATIONS_API_PORT": 8004,
    "ORDERS_WORKER_PORT": 8011,
    "PAYMENTS_WORKER_PORT": 8012,
    "REFUNDS_WORKER_PORT": 8013,
    "NOTIFICATIONS_WORKER_PORT": 8014,
    "WECHAT_SANDBOX_PORT": 8101,
    "MOLLIE_SANDBOX_PORT": 8102,
    "MAIL_HTTP_PORT": 8103,
    "MAIL_SMTP_PORT": 1025,
    "POSTGRES_PORT": 55432,
    "KAFKA_PORT": 19092,
}


def port(name: str) -> int:
    return int(os.environ.get(name, DEFAULT_PORTS[name]))


@dataclass(frozen=True)
class Paths:
    run: Path = RUN
    logs: Path = RUN / "logs"
    keys: Path = RUN / "keys"
    pg: Path = RUN / "pg"
    nginx: Path = RUN / "nginx"
    state: Path = RUN / "stack.json"
    # when the running (or last) broker instance started: what a replay must cover once it is gone
    broker_started: Path = RUN / "broker-started"
    supervisor_pid: Path = RUN / "supervisor.pid"


PATHS = Paths()


@dataclass
class Component:
    """One supervised process: how to start it and how to tell it is healthy."""

    name: str
    argv: list[str]
    health_url: str | None = None
    health_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    # a Kafka client holding positions in the broker's log: it must not outlive the broker
    # instance it started against (the memory-only broker's successor has other logs)
    broker_bound: bool = False


def pg_dsn(database: str, role: str = "postgres") -> str:
    """A database of the local cluster as ``role`` (services connect as their own role)."""
    return f"postgresql://{role}@127.0.0.1:{port('POSTGRES_PORT')}/{database}"


def bootstrap() -> str:
    return f"127.0.0.1:{port('KAFKA_PORT')}"


def service_env() -> dict[str, str]:
    """Environment every service process gets (the caller's own environment comes on top)."""
    env = {
        "APP_ENV": os.environ.get("APP_ENV", "dev"),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap(),
        "JWT_PUBLIC_KEY_FILE": str(PATHS.keys / "jwt-public.pem"),
        "INVITE_SECRET_FILE": str(PATHS.keys / "invite-secret"),
        # verified on every token, here too; `make token` issues tokens with these
        "JWT_ISSUER": os.environ.get("JWT_ISSUER", DEV_ISSUER),
        "JWT_AUDIENCE": os.environ.get("JWT_AUDIENCE", DEV_AUDIENCE),
        "NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
        "NOTIFICATIONS_SMTP_PORT": str(port("MAIL_SMTP_PORT")),
        "NOTIFICATIONS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port('GATEWAY_PORT')}",
        # payments: the WeChat Pay sandbox and the keys the stack generated; providers call back
        # through the gateway, as they would in production
        "PAYMENTS_WECHAT_BASE_URL": f"http://127.0.0.1:{port('WECHAT_SANDBOX_PORT')}",
        "PAYMENTS_WECHAT_KEYS_DIR": str(PATHS.keys),
        "PAYMENTS_MOLLIE_BASE_URL": f"http://127.0.0.1:{port('MOLLIE_SANDBOX_PORT')}",
        "PAYMENTS_MOLLIE_KEYS_DIR": str(PATHS.keys),
        "PAYMENTS_MOLLIE_REDIRECT_URL": f"http://127.0.0.1:{port('GATEWAY_PORT')}/orders/{{order_id}}",
        "PAYMENTS_PUBLIC_BASE_URL": f"http://127.0.0.1:{port('GATEWAY_PORT')}",
        # the Mollie sandbox walks a refund a step per SANDBOX_AUTO_SETTLE_MS (200 ms for what
        # takes Mollie days), webhook after webhook: fetches spaced 1 s apart would skip steps
        "PAYMENTS_MOLLIE_WEBHOOK_MIN_INTERVAL_MS": "100",
        # the embedded broker does not answer a waiting fetch when records arrive; it looks again
        # only after about half the fetch's max wait (measured), so a short wait keeps each hop fast
        "CONSUMER_FETCH_MAX_WAIT_MS": "50",
        # one partition per topic: the stack runs one worker per service, so more partitions buy
        # no parallelism here, while the embedded broker and every consumer pay for each one on
        # every fetch (measured: the broker's idle CPU 10.4 % → 5.8 % of a core, and 2.8 → 2.3 ms
        # per refund settlement under load). Order per order id holds either way.
        "KAFKA_TOPIC_PARTITIONS": "1",
    }
    for svc in SERVICES:
        up = svc.upper()
        # the service runs as a role that owns nothing; its owner role only migrates
        env[f"{up}_DATABASE_URL"] = pg_dsn(svc, role=svc)
        env[f"{up}_MIGRATION_DATABASE_URL"] = pg_dsn(svc, role=db.owner_role(svc))
        env[f"{up}_API_PORT"] = str(port(f"{up}_API_PORT"))
        env[f"{up}_WORKER_PORT"] = str(port(f"{up}_WORKER_PORT"))
    # what the caller set wins (e.g. ORDER_TTL_SECONDS=5 make up)
    return {**env, **{k: v for k, v in os.environ.items() if k in env}}


def components(broker_argv: list[str]) -> list[Component]:
    py = sys.executable
    out = [
        Component("broker", broker_argv, health_port=port("KAFKA_PORT")),
        Component(
            "mailsink",
            [
                py,
                "-m",
                "ticketing_local.mailsink",
                "--smtp-port",
                str(port("MAIL_SMTP_PORT")),
                "--http-port",
                str(port("MAIL_HTTP_PORT")),
            ],
            health_url=f"http://127.0.0.1:{port('MAIL_HTTP_PORT')}/healthz",
        ),
        Component(
            "wechat-sandbox",
            [
                py,
                "-m",
                "ticketing_local.sandbox.wechat",
                "--port",
                str(port("WECHAT_SANDBOX_PORT")),
                "--keys",
                str(PATHS.keys),
            ],
            health_url=f"http://127.0.0.1:{port('WECHAT_SANDBOX_PORT')}/healthz",
        ),
        Component(
            "mollie-sandbox",
            [
                py,
                "-m",
                "ticketing_local.sandbox.mollie",
                "--port",
                str(port("MOLLIE_SANDBOX_PORT")),
                "--keys",
                str(PATHS.keys),
            ],
            health_url=f"http://127.0.0.1:{port('MOLLIE_SANDBOX_PORT')}/healthz",
        ),
    ]
    for svc in SERVICES:
        up = svc.upper()
        out.append(
            Component(
                f"{svc}-api",
                [py, "-m", svc, "api"],
                health_url=f"http://127.0.0.1:{port(f'{up}_API_PORT')}/readyz",
            )
        )
        out.append(
            Component(
                f"{svc}-worker",
                [py, "-m", svc, "worker"],
                health_url=f"http://127.0.0.1:{port(f'{up}_WORKER_PORT')}/readyz",
                broker_bound=True,
            )
        )
    out.append(
        Component(
            "gateway",
            [
                "nginx",
                "-p",
                str(PATHS.nginx),
                "-c",
                str(PATHS.nginx / "nginx.conf"),
                "-e",
                str(PATHS.logs / "gateway-error.log"),
                "-g",
                "daemon off;",
            ],
            health_url=f"http://127.0.0.1:{port('GATEWAY_PORT')}/healthz",
        )
    )
    return out


NGINX_MAIN = """\
# Generated by the local stack from deploy/gateway/nginx.conf; do not edit.
# Workers run as the user who started the stack (started as root, nginx would otherwise switch
# them to `nobody`, who may not reach the checkout: /docs and /openapi.json are files there).
user $user;
worker_processes 1;
pid $run/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $run/tmp/body;
    proxy_temp_path $run/tmp/proxy;
    fastcgi_temp_path $run/tmp/fastcgi;
    uwsgi_temp_path $run/tmp/uwsgi;
    scgi_temp_path $run/tmp/scgi;
    include $run/gateway.conf;
}
"""


# The gateway's abuse limits and proxy trust (deploy/gateway/nginx.conf), each overridable from
# the environment (GATEWAY_RATE_PER_TOKEN=5r/s make up). Per token as in production; per client
# address far above it, since every client of the local stack is 127.0.0.1 (a flash sale's
# fifty buyers, the sandboxes' webhooks); no proxy in front of it is trusted.
GATEWAY_LIMITS = {
    "GATEWAY_RATE_PER_TOKEN": "10r/s",
    "GATEWAY_BURST_PER_TOKEN": "20",
    "GATEWAY_RATE_PER_ADDRESS": "20000r/s",
    "GATEWAY_BURST_PER_ADDRESS": "20000",
    "GATEWAY_WEBHOOK_RATE_PER_ADDRESS": "20000r/s",
    "GATEWAY_WEBHOOK_BURST_PER_ADDRESS": "20000",
    "GATEWAY_TRUSTED_PROXIES": "0.0.0.0/32",
}


def render_gateway(into: Path | None = None, **overrides: str) -> Path:
    """Render the one gateway config (deploy/gateway/nginx.conf) for the local ports, into the
    stack's nginx folder (or ``into``); ``overrides``: placeholders' values (tests run a second
    gateway with other limits). Returns the main config's path."""
    folder = into or PATHS.nginx
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    template = (REPO / "deploy" / "gateway" / "nginx.conf").read_text()
    values = {
        # loopback only: the local stack is not meant to be reached from other machines
        "GATEWAY_PORT": f"127.0.0.1:{port('GATEWAY_PORT')}",
        **{f"{s.upper()}_API": f"127.0.0.1:{port(f'{s.upper()}_API_PORT')}" for s in SERVICES},
        "GATEWAY_DOCS": str(REPO / "deploy" / "gateway" / "docs"),
        **{name: os.environ.get(name, default) for name, default in GATEWAY_LIMITS.items()},
        **overrides,
    }
    # substitute only our placeholders: nginx's own $variables stay as they are
    rendered = template
    for key, value in values.items():
        rendered = rendered.replace("${" + key + "}", value)
    (folder / "gateway.conf").write_text(rendered)
    (folder / "nginx.conf").write_text(
        Template(NGINX_MAIN).substitute(run=str(folder), user=getpass.getuser())
    )
    return folder / "nginx.conf"
