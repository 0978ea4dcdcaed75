"""The protocol every provider's flow follows, and the error of a task none can carry out."""

from __future__ import annotations

from typing import Any, Protocol
from uuid import UUID

import asyncpg

from ticketing_shared.auth import Principal


class UnknownTask(LookupError):
    """A task no flow knows (a release that wrote kinds this one does not): it fails, loudly,
    rather than being marked done with nothing done."""


class Flow(Protocol):
    """What every provider's flow does."""

    provider: str

    async def checkout(
        self,
        pool: asyncpg.Pool,
        principal: Principal,
        order_id: UUID,
        *,
        openid: str | None,
        user_agent: str | None,
    ) -> dict[str, Any]:
        """Start (or resume) paying a PENDING order of the caller's."""
        ...

    async def close(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """Close the unpaid provider payment of a cancelled or expired order."""
        ...

    async def refund(
        self, conn: asyncpg.Connection, task: asyncpg.Record, *, give_up: bool
    ) -> None:
        """Execute a refund at the provider (``give_up``: this is the last attempt)."""
        ...

    async def cancel_refund(self, conn: asyncpg.Connection, task: asyncpg.Record) -> None:
        """Withdraw a refund the provider holds but has not paid out yet."""
        ...
