"""Kafka client security: settings → aiokafka keyword arguments, the refusals at start, and
every client the code builds getting them (no broker needed: the clients are caught as built)."""

from __future__ import annotations

import ast
import datetime as dt
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from ticketing_shared import cli, kafka
from ticketing_shared.consumer import EventConsumer
from ticketing_shared.contracts import ALL_TOPICS, OrderPaid, dlq_topic
from ticketing_shared.outbox import OutboxRelay
from ticketing_shared.settings import ServiceSettings
from ticketing_shared.worker import create_worker

REPO = Path(__file__).resolve().parents[2]
KAFKA_ENV = (
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SASL_PASSWORD_FILE",
    "KAFKA_SSL_CAFILE",
    "KAFKA_SSL_CERTFILE",
    "KAFKA_SSL_KEYFILE",
    "KAFKA_ALLOW_PLAINTEXT",
    "APP_ENV",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KAFKA_ENV:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA and a client certificate it signed (PEM files), made for this module."""
    out = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)

    def cert(
        subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: Any, ca: bool
    ) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    files = {
        "ca": cert("ticketing test CA", ca_key, "ticketing test CA", ca_key, True),
        "cert": cert("orders", client_key, "ticketing test CA", ca_key, False),
    }
    paths = {name: out / f"{name}.pem" for name in ("ca", "cert", "key")}
    for name, c in files.items():
        paths[name].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _sasl_ssl(tmp_path: Path, pki: dict[str, Path], **extra: Any) -> ServiceSettings:
    password = tmp_path / "kafka-password"
    password.write_text("s3cret\n")
    return ServiceSettings(
        service_name="orders",
        kafka_bootstrap_servers="kafka-1:9093,kafka-2:9093",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="orders",
        kafka_sasl_password_file=password,
        kafka_ssl_cafile=pki["ca"],
        **extra,
    )


# --------------------------------------------------------------------------------------------
# settings → aiokafka keyword arguments
# --------------------------------------------------------------------------------------------


def test_plaintext_is_the_dev_default_and_passes_no_credentials() -> None:
    options = kafka.client_options(ServiceSettings(kafka_bootstrap_servers="127.0.0.1:19092"))
    assert options == {"bootstrap_servers": "127.0.0.1:19092", "security_protocol": "PLAINTEXT"}


def test_sasl_ssl_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: dict[str, Path]
) -> None:
    (tmp_path / "pw").write_text("from-a-file\n")
    for name, value in {
        "APP_ENV": "prod",
        "JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----",
        "JWT_ISSUER": "https://idp",
        "JWT_AUDIENCE": "api",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka:9093",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",  # any case
        "KAFKA_SASL_USERNAME": "orders",
        "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "pw"),
        "KAFKA_SSL_CAFILE": str(pki["ca"]),
    }.items():
        monkeypatch.setenv(name, value)
    options = kafka.client_options(ServiceSettings())
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "kafka:9093",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",  # the default mechanism
        "sasl_plain_username": "orders",
        "sasl_plain_password": "from-a-file",  # the file's line ending is not the password's
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    # the configured CA, not only the system's
    assert {"commonName": "ticketing test CA"} in [
        dict(rdn[0] for rdn in c["subject"]) for c in context.get_ca_certs()
    ]


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN", "scram-sha-512"])
def test_sasl_plaintext_with_each_mechanism(mechanism: str) -> None:
    options = kafka.client_options(
        ServiceSettings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism=mechanism,
            kafka_sasl_username="refunds",
            kafka_sasl_password="pw",
        )
    )
    assert "ssl_context" not in options
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert options["sasl_mechanism"] == mechanism.upper()
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("refunds", "pw")


def test_ssl_with_a_client_certificate(pki: dict[str, Path]) -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki["ca"],
        kafka_ssl_certfile=pki["cert"],
        kafka_ssl_keyfile=pki["key"],
    )
    options = kafka.client_options(settings)
    assert options["security_protocol"] == "SSL"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert not any(k.startswith("sasl_") for k in options)
    # a certificate with a key that is not its own is refused when the context is built
    other = ServiceSettings(
        kafka_security_protocol="SSL", kafka_ssl_certfile=pki["ca"], kafka_ssl_keyfile=pki["key"]
    )
    with pytest.raises(ssl.SSLError):
        kafka.client_options(other)


def test_a_rotated_password_file_is_read_by_the_next_client(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    settings = _sasl_ssl(tmp_path, pki)
    assert kafka.client_options(settings)["sasl_plain_password"] == "s3cret"
    (tmp_path / "kafka-password").write_text("rotated")
    assert kafka.client_options(settings)["sasl_plain_password"] == "rotated"


def test_the_password_stays_out_of_the_settings_repr() -> None:
    settings = ServiceSettings(
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="do-not-log-me",
    )
    assert "do-not-log-me" not in repr(settings)


# --------------------------------------------------------------------------------------------
# refusals at start
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "needs KAFKA_SASL_USERNAME"),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "u"},
            "exactly one of KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_sasl_password_file": "/etc/hostname",
            },
            "exactly one of",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password_file": "/nonexistent/kafka-password",
            },
            "KAFKA_SASL_PASSWORD_FILE=/nonexistent/kafka-password cannot be read",
        ),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "",
            },
            "password is empty",
        ),
        ({"kafka_sasl_username": "u", "kafka_sasl_password": "p"}, "does not use SASL"),
        ({"kafka_ssl_cafile": "/etc/hostname"}, "does not use TLS"),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "KAFKA_SSL_CAFILE=/nonexistent/ca.pem cannot be read",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/etc/hostname"},
            "KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE",
        ),
        ({"kafka_security_protocol": "TLS"}, "KAFKA_SECURITY_PROTOCOL|security_protocol"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI"},
            "sasl_mechanism|KAFKA_SASL_MECHANISM",
        ),
    ],
)
def test_inconsistent_settings_are_refused_at_start(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ServiceSettings(**settings)


def test_an_unreadable_password_file_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(ValidationError, match="cannot be read"):
        ServiceSettings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_username="u",
            kafka_sasl_password_file=directory,
        )


_PROD = {"env": "prod", "jwt_public_key": "pem", "jwt_issuer": "i", "jwt_audience": "a"}


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_unencrypted_kafka_outside_dev_only_when_allowed_explicitly(protocol: str) -> None:
    creds = {"kafka_sasl_username": "u", "kafka_sasl_password": "p"} if "SASL" in protocol else {}
    with pytest.raises(ValidationError, match="KAFKA_ALLOW_PLAINTEXT=true"):
        ServiceSettings(**_PROD, kafka_security_protocol=protocol, **creds)
    allowed = ServiceSettings(
        **_PROD, kafka_security_protocol=protocol, kafka_allow_plaintext=True, **creds
    )
    assert kafka.client_options(allowed)["security_protocol"] == protocol
    for env in ("dev", "test"):  # the embedded stack and the tests: plaintext on loopback
        ServiceSettings(env=env, kafka_security_protocol=protocol, **creds)


def test_tls_outside_dev_needs_no_allowance(tmp_path: Path, pki: dict[str, Path]) -> None:
    settings = _sasl_ssl(tmp_path, pki, **_PROD)
    assert kafka.client_options(settings)["security_protocol"] == "SASL_SSL"


# --------------------------------------------------------------------------------------------
# ensure_topics where the service may not create topics
# --------------------------------------------------------------------------------------------


class _FakeAdmin:
    """Stands in for AIOKafkaAdminClient's network calls (its constructor stays the real one);
    the methods are set on the real class, so they read the scenario from this class."""

    existing: tuple[str, ...] = ()
    answer: Any = None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def list_topics(self) -> list[str]:
        return list(_FakeAdmin.existing)

    async def create_topics(self, new_topics: list[Any], timeout_ms: int | None = None) -> Any:
        answer = _FakeAdmin.answer
        if isinstance(answer, BaseException):
            raise answer
        code = 0 if answer is None else answer
        return SimpleNamespace(topic_errors=[(t.name, code, None) for t in new_topics])


@pytest.fixture
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> type[_FakeAdmin]:
    for name in ("start", "close", "list_topics", "create_topics"):
        monkeypatch.setattr(AIOKafkaAdminClient, name, getattr(_FakeAdmin, name))
    monkeypatch.setattr(_FakeAdmin, "existing", ())
    monkeypatch.setattr(_FakeAdmin, "answer", None)
    return _FakeAdmin


ALL_WANTED = [*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)]


async def test_ensure_topics_creates_the_missing_ones(
    fake_admin: type[_FakeAdmin], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_admin, "existing", ("orders.events",))
    created = await kafka.ensure_topics(kafka.plaintext_options("127.0.0.1:1"))
    assert sorted(created) == sorted(t for t in ALL_WANTED if t != "orders.events")


@pytest.mark.parametrize(
    "answer",
    [
        TopicAuthorizationFailedError.errno,  # per topic: no Create on it
        31,  # CLUSTER_AUTHORIZATION_FAILED
        TopicAuthorizationFailedError(),  # raised instead of answered
    ],
)
async def test_ensure_topics_without_the_right_leaves_them_to_the_operator(
    fake_admin: type[_FakeAdmin],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    answer: Any,
) -> None:
    monkeypatch.setattr(fake_admin, "answer", answer)
    with caplog.at_level(logging.INFO, logger="ticketing_shared.kafka"):
        assert await kafka.ensure_topics(kafka.plaintext_options("127.0.0.1:1")) == []
    assert "kafka.topics_provisioned_by_operator" in caplog.messages


async def test_ensure_topics_still_fails_on_other_errors(
    fake_admin: type[_FakeAdmin], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fake_admin, "answer", 37)  # INVALID_PARTITIONS
    with pytest.raises(KafkaError, match="error code 37"):
        await kafka.ensure_topics(kafka.plaintext_options("127.0.0.1:1"))


# --------------------------------------------------------------------------------------------
# every client the code builds gets the options
# --------------------------------------------------------------------------------------------


class _Started(Exception):
    """A client was started: as far as a test without a broker goes."""


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch, fake_admin: type[_FakeAdmin]) -> list[dict[str, Any]]:
    """The keyword arguments of every aiokafka client constructed while the test runs.

    Constructors stay real (they open no connection); consumers refuse to start, producers
    start and stop without a broker, and the admin client answers that every topic exists."""
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(fake_admin, "existing", tuple(ALL_WANTED))
    for cls in (AIOKafkaProducer, AIOKafkaConsumer, AIOKafkaAdminClient):
        original = cls.__init__

        def record(
            self: Any, *args: Any, _cls: type = cls, _init: Any = original, **kwargs: Any
        ) -> None:
            seen.append({"client": _cls.__name__, **kwargs})
            _init(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", record)

    async def nothing(self: Any) -> None:
        pass

    async def refuse(self: Any) -> None:
        raise _Started

    monkeypatch.setattr(AIOKafkaProducer, "start", nothing)
    monkeypatch.setattr(AIOKafkaProducer, "stop", nothing)
    monkeypatch.setattr(AIOKafkaConsumer, "start", refuse)
    return seen


def _assert_secured(seen: list[dict[str, Any]], *clients: str) -> None:
    assert sorted(c["client"] for c in seen) == sorted(clients)
    for client in seen:
        assert client["security_protocol"] == "SASL_SSL", client
        assert client["sasl_mechanism"] == "SCRAM-SHA-512", client
        assert client["sasl_plain_username"] == "orders", client
        assert client["sasl_plain_password"] == "s3cret", client
        assert isinstance(client["ssl_context"], ssl.SSLContext), client
        servers = client["bootstrap_servers"]
        assert "kafka-1:9093" in (servers if isinstance(servers, str) else ",".join(servers))


async def test_the_worker_builds_its_consumer_and_dlq_producer_from_the_options(
    built: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pki: dict[str, Path],
) -> None:
    class Pool:
        async def close(self) -> None:
            pass

    async def create_pool(*args: Any, **kwargs: Any) -> Pool:
        return Pool()

    async def any_role(pool: Any) -> None:
        pass

    monkeypatch.setattr("ticketing_shared.worker.db.create_pool", create_pool)
    monkeypatch.setattr("ticketing_shared.worker.db.check_runtime_role", any_role)
    consumer = EventConsumer("orders")

    @consumer.on(OrderPaid)
    async def paid(conn: Any, data: Any, event: Any) -> None:
        pass

    app = create_worker(_sasl_ssl(tmp_path, pki), consumers=[consumer], relay=False)
    with pytest.raises(_Started):
        async with app.router.lifespan_context(app):
            pass
    # topics ensured (admin), the DLQ producer, then the subscription's consumer
    _assert_secured(built, "AIOKafkaAdminClient", "AIOKafkaProducer", "AIOKafkaConsumer")


async def test_the_outbox_relay_builds_its_admin_and_producer_from_the_options(
    built: list[dict[str, Any]], tmp_path: Path, pki: dict[str, Path]
) -> None:
    class Conn:
        async def add_listener(self, *args: Any) -> None:
            pass

        async def fetchval(self, *args: Any) -> bool:
            raise _Started  # the producer has started: enough

    relay = OutboxRelay(
        dsn="postgresql://unused",
        kafka_options=kafka.client_options(_sasl_ssl(tmp_path, pki)),
        service="orders",
    )
    with pytest.raises(_Started):
        await relay._relay(Conn())  # type: ignore[arg-type]
    _assert_secured(built, "AIOKafkaAdminClient", "AIOKafkaProducer")


def test_outbox_replay_ensures_topics_with_the_options(
    built: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    pki: dict[str, Path],
) -> None:
    async def connect(dsn: str) -> Any:
        raise _Started  # topics ensured: the database is next

    monkeypatch.setattr("ticketing_shared.cli.asyncpg.connect", connect)
    with pytest.raises(_Started):
        cli.run_cli(
            service="orders",
            settings_factory=lambda: _sasl_ssl(tmp_path, pki),
            api_factory=lambda s: None,
            worker_factory=lambda s: None,
            migrations_dir=tmp_path,
            argv=["outbox", "replay", "--since", "15m"],
        )
    _assert_secured(built, "AIOKafkaAdminClient")


# The behavioural tests above cover today's clients; this one keeps a new one from bypassing
# kafka.client_options: outside kafka.py no code constructs an aiokafka client.
_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}


def _sources() -> Iterator[Path]:
    yield from (REPO / "shared/src").rglob("*.py")
    yield from (REPO / "deploy/local/src").rglob("*.py")
    for service in ("orders", "payments", "refunds", "notifications"):
        yield from (REPO / "services" / service / "src").rglob("*.py")


def _called_name(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def test_no_code_builds_a_kafka_client_around_client_options() -> None:
    offences = []
    for path in _sources():
        rel = path.relative_to(REPO).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), filename=rel)):
            if not isinstance(node, ast.Call):
                continue
            name = _called_name(node)
            if name in _CLIENTS and rel != "shared/src/ticketing_shared/kafka.py":
                offences.append(f"{rel}:{node.lineno} builds {name} directly")
            # unauthenticated options are for the embedded broker and the tests only
            if name == "plaintext_options" and "/embedded/" not in rel and "/testing/" not in rel:
                offences.append(f"{rel}:{node.lineno} uses plaintext_options")
    assert offences == []
