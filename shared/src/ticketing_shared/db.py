"""asyncpg pool, transactions and numbered SQL migrations.

One transaction owner: the route dependency or the consumer wrapper opens the transaction;
services and repositories receive the connection and never commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from typing import Any

import asyncpg

from .schema import (
    FUNCTIONS_FILE as FUNCTIONS_FILE,
)
from .schema import (  # the database machinery every service and tool reaches through db
    GRANTS_FILE as GRANTS_FILE,
)
from .schema import (
    WITHOUT_TRANSACTION as WITHOUT_TRANSACTION,
)
from .schema import (
    Migration as Migration,
)
from .schema import (
    PrivilegedRole as PrivilegedRole,
)
from .schema import (
    check_runtime_role as check_runtime_role,
)
from .schema import (
    dir_migrations as dir_migrations,
)
from .schema import (
    ensure_database as ensure_database,
)
from .schema import (
    migrate as migrate,
)
from .schema import (
    owner_role as owner_role,
)
from .schema import (
    role_dsn as role_dsn,
)
from .schema import (
    shared_migrations as shared_migrations,
)
from .schema import (
    user_of as user_of,
)
from .writes import dumps

log = logging.getLogger(__name__)


async def init_connection(conn: asyncpg.Connection) -> None:
    # parameters may be dataclasses (rows written by name: ticketing_shared.writes)
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=dumps, decoder=json.loads, schema="pg_catalog")


async def _release_without_reset(conn: asyncpg.Connection) -> None:
    """Nothing to undo: our pooled connections never leave session state behind (settings are
    transaction-local, ``set_config(..., true)``, but for the all-tenants scope of a pool made
    for it (``create_pool(all_tenants=True)``), which is meant to stay; advisory locks live on
    dedicated connections).
    asyncpg still rolls back an unfinished transaction first. This saves the ``RESET ALL`` round
    trip asyncpg makes on every release by default."""


class DatabaseUnavailable(ConnectionError):
    """No connection to the database could be had: it refused or could not be reached, or no
    pooled connection came free in time. Raised by the pools of :func:`create_pool` in place of
    the bare ``OSError`` or ``TimeoutError``, which elsewhere say nothing about the database."""


# What says the database, not the request, the message or our code, is at fault right now: it is
# down, restarting or refusing connections, or it dropped the connection mid-statement. An API
# answers these 503 with Retry-After, a consumer reads its message again later (never its DLQ).
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,  # connecting failed, or no pooled connection in time (FairPool)
    asyncpg.PostgresConnectionError,  # class 08: the connection was lost, refused or never made
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: a fast shutdown (or an administrator) ended the session
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed, every session ends
    asyncpg.TooManyConnectionsError,  # 53300: no connection slot left on the server
)


_FAILED_BY_SERVER = re.compile(
    r"^cannot switch to state \d+; another operation \(2\) is in progress"
)


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot serve now (so: try again later), as opposed to a
    fault of the request or a bug, which must stay visible as one."""
    if isinstance(exc, asyncpg.ProtocolViolationError):
        return False  # 08P01, in class 08 too: what we sent was malformed, a bug of ours
    if isinstance(exc, _UNAVAILABLE):
        return True
    if isinstance(exc, asyncpg.InterfaceError):
        # otherwise a misuse of the driver (another operation in progress, a connection used
        # after its release, a value it cannot encode): a bug. Only a connection the server
        # closed is not: e.g. the transaction's exit after the server went away mid-statement
        # ("cannot call Transaction.__aexit__(): the underlying connection is closed", raised in
        # place of the ConnectionDoesNotExistError it follows).
        return "connection is closed" in str(exc)
    if isinstance(exc, asyncpg.InternalClientError):
        # A server that ends idle sessions (a fast shutdown, pg_terminate_backend) sends each a
        # FATAL error, then closes it. asyncpg puts a connection that gets an error while idle in
        # the state that waits for the end of a failed operation (2, ERROR_CONSUME); a statement
        # sent on it before the close arrives fails with this. (Using one connection from two
        # tasks at once, our bug, is an InterfaceError, refused before any state changes.)
        return _FAILED_BY_SERVER.search(str(exc)) is not None
    return False


class FairPool(asyncpg.Pool):  # type: ignore[misc]
    """asyncpg's pool, serving waiting callers first come, first served.

    asyncpg hands a released connection to whoever asks next: under sustained load a newcomer
    takes it before the waiter woken for it, who then queues again at the back (measured: in a
    flash sale of 1,000 seats to 200 buyers, 180 requests made at the start waited the whole
    2.7 s and got ``409 inventory_exhausted`` at the end). A FIFO semaphore of the pool's size in
    front of it (``asyncio.Semaphore`` is fair) restores arrival order.

    A connection that cannot be made (the server refuses it or cannot be reached, the attempt
    times out) or a wait for one that times out raises :class:`DatabaseUnavailable`. Connections
    the server closed (a restart, a terminated backend) are replaced by new ones at the next
    acquire: asyncpg sees their end as it comes, and a pool recovers by itself once the database
    is back."""

    def __init__(self, *args: Any, max_size: int, **kwargs: Any) -> None:
        super().__init__(*args, max_size=max_size, **kwargs)
        self._turns = asyncio.Semaphore(max_size)
        self._held: set[Any] = set()  # the connections handed out after a turn

    def acquire(self, *, timeout: float | None = None) -> FairAcquire:
        """A connection, in turn (``await`` it, or ``async with`` it)."""
        return FairAcquire(self, timeout)

    async def acquire_in_turn(self, timeout: float | None) -> Any:
        if timeout is None:
            await self._turns.acquire()
        else:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self._turns.acquire(), timeout)
            except TimeoutError as exc:
                raise DatabaseUnavailable(f"no database connection free in {timeout} s") from exc
            timeout = max(0.0, timeout - (time.monotonic() - started))
        try:
            connection = await super().acquire(timeout=timeout)
        except OSError as exc:  # TimeoutError included: connecting, or waiting, took too long
            self._turns.release()
            raise DatabaseUnavailable(f"cannot connect to the database: {exc!r}") from exc
        except BaseException:
            self._turns.release()
            raise
        self._held.add(connection)
        return connection

    async def release(self, connection: Any, *, timeout: float | None = None) -> None:
        held = connection in self._held
        self._held.discard(connection)
        try:
            await super().release(connection, timeout=timeout)
        finally:
            if held:
                self._turns.release()


class FairAcquire:
    """What :meth:`FairPool.acquire` returns: awaitable, or an async context manager that
    releases the connection at its end (as asyncpg's own)."""

    __slots__ = ("connection", "pool", "timeout")

    def __init__(self, pool: FairPool, timeout: float | None) -> None:
        self.pool, self.timeout = pool, timeout
        self.connection: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self.pool.acquire_in_turn(self.timeout).__await__()

    async def __aenter__(self) -> Any:
        self.connection = await self.pool.acquire_in_turn(self.timeout)
        return self.connection

    async def __aexit__(self, *exc: object) -> None:
        connection, self.connection = self.connection, None
        await self.pool.release(connection)


async def create_pool(
    dsn: str, *, min_size: int = 2, max_size: int = 10, all_tenants: bool = False
) -> asyncpg.Pool:
    """Create a fair pool whose connections decode json/jsonb to Python objects.

    ``all_tenants``: every connection is scoped to all tenants for its whole session (row-level
    security), for work that spans tenants by design: schedulers, the e-mail sender, provider
    callbacks, which find their rows by a provider's reference. Such a pool is never used for a
    request made on a caller's behalf; a transaction on it may still narrow its own scope.
    """

    async def init(conn: asyncpg.Connection) -> None:
        await init_connection(conn)
        await conn.execute("SELECT set_config('app.tenant_id', $1, false)", ALL_TENANTS)

    pool = await FairPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        init=init if all_tenants else init_connection,
        reset=_release_without_reset,
        command_timeout=30,
    )
    assert pool is not None
    return pool


@asynccontextmanager
async def transaction(
    pool: asyncpg.Pool, *, tenant_id: str | Iterable[str] | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """Acquire a connection and run one transaction; commit on success, roll back on error.

    ``tenant_id`` sets ``app.tenant_id`` for the transaction only, the key of the row-level
    security policies on tenant-scoped tables.
    """
    async with pool.acquire() as conn, conn.transaction():
        if tenant_id is not None:
            await set_tenant(conn, tenant_id)
        yield conn


ALL_TENANTS = "*"


def tenant_scope(tenants: str | Iterable[str]) -> str:
    """The value of ``app.tenant_id``: one tenant, several, or ``ALL_TENANTS``."""
    items = [tenants] if isinstance(tenants, str) else sorted(set(tenants))
    if items == [ALL_TENANTS]:
        return ALL_TENANTS
    for t in items:
        if not t or "," in t or "*" in t:
            raise ValueError(f"bad tenant id {t!r}")
    return ",".join(items)


# Inside one transaction that applies several events (a consumer's batch), the scope already set
# on a connection: setting the same scope again is skipped. Set (to a fresh dict) and reset by
# whoever owns that transaction: see :func:`scope_cache`. Only valid while nothing but
# set_tenant changes app.tenant_id in that transaction (consumer handlers never call the SQL
# functions that scope themselves: purchase_seats, scope_to, ...).
_scopes: ContextVar[dict[int, str] | None] = ContextVar("tenant_scopes", default=None)


@contextmanager
def scope_cache() -> Iterator[None]:
    """For the duration of ONE transaction: :func:`set_tenant` skips repeating the scope."""
    token = _scopes.set({})
    try:
        yield
    finally:
        _scopes.reset(token)


def scoped_by_claim(conn: asyncpg.Connection, tenants: Iterable[str]) -> str:
    """The scope a consumer's inbox claim sets on ``conn`` in the same statement (it passes the
    returned value to ``set_config``): the tenants of the events it claims, never all of them (an
    event naming ``*`` is refused). Within :func:`scope_cache`, :func:`set_tenant` for that
    scope then skips its own round trip."""
    tenants = set(tenants)
    if ALL_TENANTS in tenants:
        raise ValueError("an event cannot be of all tenants")
    scope = tenant_scope(tenants)
    cache = _scopes.get()
    if cache is not None:
        cache[id(conn)] = scope
    return scope


async def set_tenant(conn: asyncpg.Connection, tenants: str | Iterable[str]) -> None:
    """Scope the current transaction to a tenant, several, or all (row-level security key)."""
    scope = tenant_scope(tenants)
    cache = _scopes.get()
    if cache is not None and cache.get(id(conn)) == scope:
        return
    await conn.execute("SELECT set_config('app.tenant_id', $1, true)", scope)
    if cache is not None:
        cache[id(conn)] = scope


def set_clause(fields: dict[str, Any], *, first: int) -> tuple[str, list[Any]]:
    """``"a = $first, b = $first+1"`` and the values, for an UPDATE of ``fields``.

    Column names come from the code (never from a request); values are always parameters.
    Each assignment is followed by ``, `` so callers append ``updated_at = now()``.
    """
    cols = list(fields)
    return "".join(f"{c} = ${first + i}, " for i, c in enumerate(cols)), [fields[c] for c in cols]


def row_to_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
