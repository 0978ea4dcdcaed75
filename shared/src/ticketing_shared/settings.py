"""Settings shared by every service role, read from the environment.

Service-specific values use a service prefix (``ORDERS_DATABASE_URL``); values every service
shares (the broker, the JWT key) have no prefix, so ``make up`` can pass one environment to all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from . import db
from .auth import DEV_AUDIENCE, DEV_ISSUER, JwksKeys, TokenVerifier

_PLACEHOLDERS = {"", "changeme", "secret", "placeholder", "xxx"}


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

    def public_key_pem(self) -> str:
        if self.jwt_public_key:
            return self.jwt_public_key
        if self.jwt_public_key_file is not None:
            return self.jwt_public_key_file.read_text()
        raise RuntimeError("no JWT public key configured (JWT_PUBLIC_KEY_FILE)")
