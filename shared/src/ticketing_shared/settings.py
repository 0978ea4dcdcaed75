"""Settings shared by every service role, read from the environment.

Service-specific values use a service prefix (``ORDERS_DATABASE_URL``); values every service
shares (the broker, the JWT key) have no prefix, so ``make up`` can pass one environment to all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import db
from .auth import DEV_AUDIENCE, DEV_ISSUER, JwksKeys, TokenVerifier
from .invite_links import InviteLinks

_PLACEHOLDERS = {"", "changeme", "secret", "placeholder", "xxx"}

KafkaSecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
KafkaSaslMechanism = Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"]


def _shared(name: str) -> Any:
    return AliasChoices(name, name.lower())


class ServiceSettings(BaseSettings):
    """Base settings; each service subclasses it and sets ``service_name`` and an env prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "service"
    env: str = Field("dev", validation_alias=_shared("APP_ENV"))
    # the role the service runs as, granted only what it uses; the services refuse to start as a
    # superuser, a role that bypasses row-level security or one that owns the tables
    database_url: str = "postgresql://service@127.0.0.1:55432/service"
    # the tables' owner, for `migrate` only (default: the runtime role's name + "_owner")
    migration_database_url: str | None = None
    db_pool_min: int = 2
    db_pool_max: int = 10
    # the connections scoped to all tenants, for schedulers and provider callbacks
    db_all_tenants_pool_max: int = 4
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:19092", validation_alias=_shared("KAFKA_BOOTSTRAP_SERVERS")
    )
    kafka_idempotent_producer: bool = Field(
        False, validation_alias=_shared("KAFKA_IDEMPOTENT_PRODUCER")
    )
    # How every Kafka client connects (kafka.client_options). PLAINTEXT, the embedded broker's, is
    # refused outside dev/test unless KAFKA_ALLOW_PLAINTEXT=true says so on purpose.
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        "PLAINTEXT", validation_alias=_shared("KAFKA_SECURITY_PROTOCOL")
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = Field(
        "SCRAM-SHA-512", validation_alias=_shared("KAFKA_SASL_MECHANISM")
    )
    kafka_sasl_username: str | None = Field(None, validation_alias=_shared("KAFKA_SASL_USERNAME"))
    kafka_sasl_password: SecretStr | None = Field(
        None, validation_alias=_shared("KAFKA_SASL_PASSWORD")
    )
    # read again by each client, so a rotated secret file is picked up by the next one
    kafka_sasl_password_file: Path | None = Field(
        None, validation_alias=_shared("KAFKA_SASL_PASSWORD_FILE")
    )
    kafka_ssl_cafile: Path | None = Field(None, validation_alias=_shared("KAFKA_SSL_CAFILE"))
    kafka_ssl_certfile: Path | None = Field(None, validation_alias=_shared("KAFKA_SSL_CERTFILE"))
    kafka_ssl_keyfile: Path | None = Field(None, validation_alias=_shared("KAFKA_SSL_KEYFILE"))
    kafka_allow_plaintext: bool = Field(False, validation_alias=_shared("KAFKA_ALLOW_PLAINTEXT"))
    topic_partitions: int = Field(6, validation_alias=_shared("KAFKA_TOPIC_PARTITIONS"))
    topic_replication: int = Field(1, validation_alias=_shared("KAFKA_REPLICATION_FACTOR"))
    jwt_public_key_file: Path | None = Field(None, validation_alias=_shared("JWT_PUBLIC_KEY_FILE"))
    jwt_public_key: str | None = Field(None, validation_alias=_shared("JWT_PUBLIC_KEY"))
    # the identity provider's JWKS document, instead of a PEM key (keys cached and rotated)
    jwt_jwks_url: str | None = Field(None, validation_alias=_shared("JWT_JWKS_URL"))
    jwt_jwks_lifespan_s: float = Field(300.0, validation_alias=_shared("JWT_JWKS_LIFESPAN_S"))
    jwt_jwks_cooldown_s: float = Field(30.0, validation_alias=_shared("JWT_JWKS_COOLDOWN_S"))
    # always verified: required outside dev/test, where the local stack's values are the default
    jwt_issuer: str | None = Field(None, validation_alias=_shared("JWT_ISSUER"))
    jwt_audience: str | None = Field(None, validation_alias=_shared("JWT_AUDIENCE"))
    log_level: str = Field("INFO", validation_alias=_shared("LOG_LEVEL"))
    # the key invite tokens are derived with (HMAC; at least 32 bytes, e.g. 64 hex digits): the
    # same wherever tokens are made (the orders service, the notifications worker)
    invite_secret: str | None = Field(None, validation_alias=_shared("INVITE_SECRET"))
    invite_secret_file: Path | None = Field(None, validation_alias=_shared("INVITE_SECRET_FILE"))
    # outbox relay: drain in batches while there is work, poll with a short backoff when idle
    outbox_batch_size: int = Field(500, validation_alias=_shared("OUTBOX_BATCH_SIZE"))
    outbox_poll_min_ms: float = Field(2.0, validation_alias=_shared("OUTBOX_POLL_MIN_MS"))
    outbox_poll_max_ms: float = Field(20.0, validation_alias=_shared("OUTBOX_POLL_MAX_MS"))
    # …and after a short batch under load, lets the next one gather this long (fewer, bigger
    # batches for the broker and every consumer)
    outbox_gather_ms: float = Field(10.0, validation_alias=_shared("OUTBOX_GATHER_MS"))
    # …or, where every outbox insert NOTIFYs the relay (the outbox_wake trigger), as a safety net
    outbox_notified_poll_max_ms: float = Field(
        1000.0, validation_alias=_shared("OUTBOX_NOTIFIED_POLL_MAX_MS")
    )
    outbox_retention_days: int = Field(7, validation_alias=_shared("OUTBOX_RETENTION_DAYS"))
    # how long an inbox claim is kept: longer than any redelivery can come (Kafka's retention,
    # an outbox replay), or a very late copy of an event would be applied again
    inbox_retention_days: float = Field(
        30.0, gt=0, validation_alias=_shared("INBOX_RETENTION_DAYS")
    )
    # how long an Idempotency-Key replays its first response
    idempotency_key_retention_hours: float = Field(
        48.0, gt=0, validation_alias=_shared("IDEMPOTENCY_KEY_RETENTION_HOURS")
    )
    # how often the worker prunes what is past its retention
    retention_interval_s: float = Field(
        3600.0, gt=0, validation_alias=_shared("RETENTION_INTERVAL_S")
    )
    # consumers: bounded retries with exponential backoff, then the topic's DLQ
    consumer_max_attempts: int = Field(5, validation_alias=_shared("CONSUMER_MAX_ATTEMPTS"))
    consumer_backoff_ms: float = Field(50.0, validation_alias=_shared("CONSUMER_BACKOFF_MS"))
    # records per batch, committed together; how long one poll of the fetched records waits
    # (it returns as soon as records arrive, so this sets only how often an idle consumer wakes)
    consumer_batch_max: int = Field(200, validation_alias=_shared("CONSUMER_BATCH_MAX"))
    consumer_batch_wait_ms: int = Field(100, validation_alias=_shared("CONSUMER_BATCH_WAIT_MS"))
    # how often applied batches' offsets are committed (in the background; the inbox absorbs
    # what a crash or rebalance re-reads)
    consumer_commit_interval_ms: int = Field(
        200, validation_alias=_shared("CONSUMER_COMMIT_INTERVAL_MS")
    )
    # how long the broker may hold a fetch that found nothing (Kafka's fetch.max.wait.ms); a
    # broker that does not answer early when records arrive adds up to this much to every hop
    consumer_fetch_max_wait_ms: int = Field(
        500, validation_alias=_shared("CONSUMER_FETCH_MAX_WAIT_MS")
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    worker_host: str = "127.0.0.1"
    worker_port: int = 9000

    @property
    def is_dev(self) -> bool:
        return self.env in ("dev", "test")

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _refuse_inconsistent_kafka_security(self) -> ServiceSettings:
        protocol = self.kafka_security_protocol
        sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
        tls = protocol in ("SSL", "SASL_SSL")
        password_set = self.kafka_sasl_password is not None
        if sasl:
            if not self.kafka_sasl_username:
                raise ValueError(f"KAFKA_SECURITY_PROTOCOL={protocol} needs KAFKA_SASL_USERNAME")
            if password_set == (self.kafka_sasl_password_file is not None):
                raise ValueError(
                    f"KAFKA_SECURITY_PROTOCOL={protocol} needs exactly one of "
                    "KAFKA_SASL_PASSWORD and KAFKA_SASL_PASSWORD_FILE"
                )
            if not self.kafka_sasl_password_value():
                raise ValueError("the Kafka SASL password is empty")
        elif self.kafka_sasl_username or password_set or self.kafka_sasl_password_file:
            # credentials given to a protocol that would not send them: a forgotten setting
            raise ValueError(
                f"KAFKA_SASL_* are set but KAFKA_SECURITY_PROTOCOL={protocol} does not use SASL "
                "(SASL_SSL or SASL_PLAINTEXT)"
            )
        ssl_files = {
            "KAFKA_SSL_CAFILE": self.kafka_ssl_cafile,
            "KAFKA_SSL_CERTFILE": self.kafka_ssl_certfile,
            "KAFKA_SSL_KEYFILE": self.kafka_ssl_keyfile,
        }
        if not tls and any(ssl_files.values()):
            raise ValueError(
                f"KAFKA_SSL_* are set but KAFKA_SECURITY_PROTOCOL={protocol} does not use TLS "
                "(SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE (the client certificate)")
        for name, path in ssl_files.items():
            if path is not None:
                _readable(name, path)
        if not tls and not self.is_dev and not self.kafka_allow_plaintext:
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={protocol} sends Kafka traffic unencrypted: outside "
                "dev use SASL_SSL (or SSL), or set KAFKA_ALLOW_PLAINTEXT=true to accept it"
            )
        return self

    def kafka_sasl_password_value(self) -> str | None:
        """The SASL password, from KAFKA_SASL_PASSWORD or (read now) KAFKA_SASL_PASSWORD_FILE."""
        if self.kafka_sasl_password is not None:
            return self.kafka_sasl_password.get_secret_value()
        if self.kafka_sasl_password_file is not None:
            return _readable("KAFKA_SASL_PASSWORD_FILE", self.kafka_sasl_password_file).rstrip(
                "\r\n"
            )
        return None

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> ServiceSettings:
        missing_key = (
            self.jwt_public_key_file is None
            and (self.jwt_public_key or "") in _PLACEHOLDERS
            and not self.jwt_jwks_url
        )
        if not self.is_dev:
            if missing_key:
                raise ValueError(
                    "JWT_PUBLIC_KEY_FILE, JWT_PUBLIC_KEY or JWT_JWKS_URL must be set outside dev"
                )
            if not self.jwt_issuer or not self.jwt_audience:
                raise ValueError("JWT_ISSUER and JWT_AUDIENCE must be set outside dev")
        return self

    def token_verifier(self) -> TokenVerifier:
        """The verifier of this deployment's tokens: its key or JWKS, issuer and audience."""
        issuer = self.jwt_issuer or DEV_ISSUER
        audience = self.jwt_audience or DEV_AUDIENCE
        if self.jwt_jwks_url:
            jwks = JwksKeys(
                self.jwt_jwks_url,
                lifespan=self.jwt_jwks_lifespan_s,
                cooldown=self.jwt_jwks_cooldown_s,
            )
            return TokenVerifier(issuer=issuer, audience=audience, jwks=jwks)
        return TokenVerifier(self.public_key_pem(), issuer=issuer, audience=audience)

    def migration_dsn(self) -> str:
        """The owner role's DSN, which applies the migrations and the runtime role's grants."""
        if self.migration_database_url:
            return self.migration_database_url
        runtime = db.user_of(self.database_url)
        database = self.database_url.rsplit("/", 1)[1].split("?", 1)[0]
        return db.role_dsn(self.database_url, database, db.owner_role(runtime))

    def invite_links(self) -> InviteLinks:
        """Invite tokens of this deployment's secret (required where tokens are made: the orders
        service and the notifications worker; there is no default)."""
        secret = self.invite_secret
        if secret is None and self.invite_secret_file is not None:
            secret = self.invite_secret_file.read_text().strip()
        if not secret:
            raise RuntimeError(
                "INVITE_SECRET or INVITE_SECRET_FILE must be set (invite tokens are derived from it)"
            )
        return InviteLinks(secret.encode())

    def public_key_pem(self) -> str:
        if self.jwt_public_key:
            return self.jwt_public_key
        if self.jwt_public_key_file is not None:
            return self.jwt_public_key_file.read_text()
        raise RuntimeError("no JWT public key configured (JWT_PUBLIC_KEY_FILE)")


def _readable(name: str, path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{name}={path} cannot be read: {exc}") from exc
