"""Retention: rows kept only as long as they serve, pruned by each service's worker.

Every service prunes its inbox (a claim only has to outlive any redelivery: Kafka's retention,
an ``outbox replay``) and its idempotency keys (a client retries within hours, not weeks); a
service adds its own rules (payments: the provider notifications it recorded). The outbox is
pruned by its relay. Rows go in small batches, so that no delete holds locks for long, on the
worker's all-tenants connections (the tables are bound by row-level security).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from prometheus_client import Counter

from .settings import ServiceSettings

log = logging.getLogger(__name__)

PRUNED = Counter("retention_pruned_rows_total", "Rows deleted past their retention", ["table"])
_IDENT = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class Rule:
    """Rows of ``table`` whose ``column`` (a time) is older than ``keep`` go."""

    table: str
    column: str
    keep: timedelta

    def __post_init__(self) -> None:
        if not (_IDENT.fullmatch(self.table) and _IDENT.fullmatch(self.column)):
            raise ValueError(f"bad table or column name in {self!r}")
        if self.keep <= timedelta(0):
            raise ValueError(f"a retention must be positive: {self!r}")


def standard_rules(settings: ServiceSettings) -> list[Rule]:
    """What every service's worker prunes: its inbox claims and its idempotency keys."""
    return [
        Rule("inbox", "processed_at", timedelta(days=settings.inbox_retention_days)),
        Rule(
            "idempotency_keys",
            "created_at",
            timedelta(hours=settings.idempotency_key_retention_hours),
        ),
    ]


async def prune(pool: asyncpg.Pool, rules: Sequence[Rule], *, batch: int = 2000) -> dict[str, int]:
    """Delete what every rule lets go, ``batch`` rows per statement; rows deleted per table."""
    done: dict[str, int] = {}
    for rule in rules:
        cutoff = datetime.now(UTC) - rule.keep
        total = 0
        while True:
            status = await pool.execute(
                f"""
                DELETE FROM {rule.table} WHERE ctid = ANY(ARRAY(
                    SELECT ctid FROM {rule.table} WHERE {rule.column} < $1 LIMIT $2))
                """,
                cutoff,
                batch,
            )
            deleted = int(status.split()[-1])
            total += deleted
            if deleted < batch:
                break
        PRUNED.labels(rule.table).inc(total)
        done[rule.table] = total
        if total:
            log.info("retention.pruned", extra={"table": rule.table, "rows": total})
    return done
