"""pytest plugin: the project's real infrastructure as fixtures.

``--infra=embedded`` (default): a private PostgreSQL cluster and the Tansu broker, started on
free ports for the session. ``--infra=containers``: PostgreSQL and Apache Kafka from
testcontainers (needs Docker).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ticketing_shared import db

from ..embedded import EmbeddedBroker, EmbeddedPostgres, free_port, wait_for_broker, wait_port
from .helpers import ServiceProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--infra",
        choices=("embedded", "containers"),
        default=os.environ.get("TEST_INFRA", "embedded"),
        help="embedded PostgreSQL + Tansu (default), or testcontainers PostgreSQL + Apache Kafka",
    )


@dataclass
class Infra:
    """Where the session's PostgreSQL and broker are, and how to make more of them."""

    kind: str
    pg_admin_dsn: str
    bootstrap: str
    work_dir: Path
    _dbs: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def dsn(self, database: str) -> str:
        return self.pg_admin_dsn.rsplit("/", 1)[0] + f"/{database}"

    def admin_dsn(self, dsn: str) -> str:
        """The superuser's DSN of the database another DSN points at: test-side peeks and time
        travel that row-level security would (rightly) hide from the service's own role."""
        return self.dsn(dsn.rsplit("/", 1)[1].split("?", 1)[0])

    async def fresh_database(self, prefix: str, migrations: list[db.Migration]) -> str:
        """Create a new database, migrated by its owner role (``<name>_owner``), and return the
        DSN of its runtime role (``<name>``), which owns nothing and is granted only what the
        grants files say: what a service connects as (``dsn(name)`` is the superuser's)."""
        name = f"{prefix}_{os.getpid()}_{next(self._dbs)}"
        owner = db.owner_role(name)
        await db.ensure_database(self.pg_admin_dsn, name, owner=owner, runtime=name)
        await db.migrate(db.role_dsn(self.pg_admin_dsn, name, owner), migrations, runtime_role=name)
        return db.role_dsn(self.pg_admin_dsn, name, name)

    def owner_dsn(self, dsn: str) -> str:
        """The owner role's DSN of the database a runtime DSN points at (migrations, DDL)."""
        database = dsn.rsplit("/", 1)[1].split("?", 1)[0]
        return db.role_dsn(self.pg_admin_dsn, database, db.owner_role(db.user_of(dsn)))

    def new_broker(self) -> EmbeddedBroker:
        """A private broker (embedded only), for tests that restart it or must not share it."""
        if self.kind != "embedded":
            pytest.skip("a private restartable broker needs --infra=embedded")
        broker = EmbeddedBroker(free_port(), log_file=self.work_dir / "broker-private.log")
        broker.start()
        return broker


@pytest.fixture(scope="session")
def work_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ticketing-tests-"))
    os.chmod(path, 0o755)
    yield path
    if os.environ.get("KEEP_TEST_DIR") != "1":
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def infra(request: pytest.FixtureRequest, work_dir: Path) -> Iterator[Infra]:
    if request.config.getoption("--infra") == "containers":
        yield from _containers(work_dir)
        return
    pg = EmbeddedPostgres(work_dir / "pg", free_port(), durable=False)
    pg.start()
    broker = EmbeddedBroker(free_port(), log_file=work_dir / "broker.log")
    broker.start()
    asyncio.run(wait_for_broker(broker.bootstrap))
    try:
        yield Infra("embedded", pg.dsn(), broker.bootstrap, work_dir)
    finally:
        broker.stop()
        pg.destroy()


def _containers(work_dir: Path) -> Iterator[Infra]:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.postgres import PostgresContainer

    with (
        PostgresContainer("postgres:15", username="postgres", password="postgres") as pg,
        KafkaContainer("confluentinc/cp-kafka:7.6.0") as kafka,
    ):
        dsn = pg.get_connection_url().replace("postgresql+psycopg2://", "postgresql://")
        yield Infra("containers", dsn, kafka.get_bootstrap_server(), work_dir)


@pytest.fixture(scope="session")
def jwt_keys(work_dir: Path) -> dict[str, Any]:
    """A fresh RS256 key pair for the session (never a committed key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    public_file = work_dir / "jwt-public.pem"
    public_file.write_text(public_pem)
    return {"private_pem": private_pem, "public_pem": public_pem, "public_file": str(public_file)}


@dataclass
class MailSink:
    smtp_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture(scope="session")
def mailsink(work_dir: Path) -> Iterator[MailSink]:
    """The real SMTP sink (aiosmtpd) as its own process, listing mail over HTTP."""
    sink = MailSink(free_port(), free_port())
    log = open(work_dir / "mailsink.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ticketing_local.mailsink",
            "--smtp-port",
            str(sink.smtp_port),
            "--http-port",
            str(sink.http_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_port(sink.smtp_port)
        wait_port(sink.http_port)
        yield sink
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def processes(work_dir: Path) -> Iterator[list[ServiceProcess]]:
    """Service processes started by a test; all stopped at its end."""
    started: list[ServiceProcess] = []
    yield started
    for p in started:
        p.stop()
