"""The whole local stack (``python -m ticketing_local up``, what ``make up`` runs) on free ports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ticketing_shared.auth import mint_token
from ticketing_shared.embedded import free_port

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


@pytest.fixture(scope="session")
def stack(work_dir: Path) -> Iterator[Stack]:
    run_dir = work_dir / "stack"
    env = {**os.environ, "TICKETING_RUN_DIR": str(run_dir), "APP_ENV": "dev"}
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
