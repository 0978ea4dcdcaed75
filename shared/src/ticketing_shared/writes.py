"""One write path: a guarded change, the audit entries it causes and the events announcing it,
written in ONE statement (one round trip), every row by name.

Rows travel to PostgreSQL as one JSON array per table (``rows_json``: dataclasses by field
name) and are unpacked there by ``jsonb_to_recordset`` with the table's named, typed columns
(``Table``). So no Python code knows a table's column order, and adding a column is one line
in the table's ``Table`` and one field in its dataclass.

``guarded()`` puts the three together: a data-modifying statement whose WHERE is the guard
(``UPDATE ... WHERE id = $1 AND status = $2 RETURNING ...``) and, only when it changed a row,
the audit rows and the outbox rows, in one statement. Statements that write more than that
(a provider's notification recorded whether or not it changed anything) add their own CTE.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson
import uuid_utils

from .contracts.base import EventData
from .logs import child_traceparent, current_traceparent

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS


def _other(value: Any) -> Any:
    if isinstance(value, UUID):  # asyncpg's UUIDs are a subclass orjson does not take
        return str(value)
    # what orjson writes itself, for the standard library's turn
    if isinstance(value, datetime):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in fields(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """JSON text of ``value``: dataclasses by field name, UUIDs and aware datetimes as text;
    what every json/jsonb parameter is encoded with (``db.init_connection``). An integer beyond
    64 bits (which JSON and jsonb allow) is written by the standard library instead."""
    try:
        return orjson.dumps(value, default=_other, option=_JSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, default=_other)


@dataclass(frozen=True)
class Table:
    """A table written from named rows: its name and each written column's SQL type."""

    name: str
    columns: Mapping[str, str]

    def insert(self, rows: str, *, only_if: str | None = None) -> str:
        """``INSERT`` of the rows in ``rows``, a jsonb SQL expression holding an array of objects
        (a ``$n::jsonb`` parameter, or a field of one); with ``only_if``, only when that SQL
        condition holds."""
        names = ", ".join(self.columns)
        typed = ", ".join(f"{c} {t}" for c, t in self.columns.items())
        where = f" WHERE {only_if}" if only_if else ""
        return (
            f"INSERT INTO {self.name} ({names}) SELECT {names} "
            f"FROM jsonb_to_recordset({rows}) AS x({typed}){where}"
        )


def new_event_id() -> UUID:
    return UUID(str(uuid_utils.uuid7()))


@dataclass(frozen=True)
class OutboxEvent:
    """One outbox row: a CloudEvent waiting for the relay. Built by :meth:`of`."""

    event_id: UUID
    topic: str
    key: str
    ce_type: str
    ce_source: str
    ce_subject: str
    ce_time: datetime
    dataschema: str
    traceparent: str | None
    data: dict[str, Any]

    @classmethod
    def of(
        cls, event: EventData, *, subject: str | UUID, source: str, event_id: UUID | None = None
    ) -> OutboxEvent:
        """``event`` about ``subject`` (its Kafka key: an order's events share a partition),
        from ``source``, carrying the current trace."""
        return cls(
            event_id=event_id or new_event_id(),
            topic=event.topic,
            key=str(subject),
            ce_type=event.ce_type,
            ce_source=source,
            ce_subject=str(subject),
            ce_time=datetime.now(UTC),
            dataschema=event.dataschema(),
            traceparent=child_traceparent(current_traceparent()),
            data=event.model_dump(mode="json"),
        )


OUTBOX = Table(
    "outbox",
    {
        "event_id": "uuid",
        "topic": "text",
        "key": "text",
        "ce_type": "text",
        "ce_source": "text",
        "ce_subject": "text",
        "ce_time": "timestamptz",
        "dataschema": "text",
        "traceparent": "text",
        "data": "jsonb",
    },
)


def guarded_sql(
    change: str, *, first: int, audit: Table | None = None, also: str = "", result: str = ""
) -> str:
    """The statement :func:`guarded` runs: ``change`` as CTE ``changed``, then the audit rows
    (parameter ``$first``, when there is an ``audit`` table) and the outbox rows (the next
    parameter), written only if it changed a row; ``also``: further CTEs (``, name AS (...)``),
    written whatever the guard said; ``result``: the final SELECT (default: every row
    ``changed`` returned)."""
    done = "EXISTS (SELECT 1 FROM changed)"
    audited = ""
    if audit is not None:
        audited = f", audited AS ({audit.insert(f'${first}::jsonb', only_if=done)})"
        first += 1
    announced = f", announced AS ({OUTBOX.insert(f'${first}::jsonb', only_if=done)})"
    return (
        f"WITH changed AS ({change}){audited}{announced}{also} {result or 'SELECT * FROM changed'}"
    )


async def guarded(
    conn: asyncpg.Connection,
    change: str,
    *args: Any,
    audit: Table | None = None,
    entries: Sequence[Any] = (),
    events: Sequence[OutboxEvent] = (),
    also: str = "",
    result: str = "",
) -> list[asyncpg.Record]:
    """Run ``change`` (one ``UPDATE``/``INSERT``/``DELETE ... RETURNING``, its guard in its
    WHERE, parameters ``args``) and, only when it changed a row, write ``entries`` into the
    ``audit`` table and ``events`` into the outbox: ONE statement. Returns what ``change``
    returned (empty: the guard held, nothing was written) or what ``result`` selects."""
    sql = guarded_sql(change, first=len(args) + 1, audit=audit, also=also, result=result)
    written = ([list(entries)] if audit is not None else []) + [list(events)]
    rows: list[asyncpg.Record] = await conn.fetch(sql, *args, *written)
    return rows
