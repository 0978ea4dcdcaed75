"""asyncpg pool, transactions and numbered SQL migrations.

One transaction owner: the route dependency or the consumer wrapper opens the transaction;
services and repositories receive the connection and never commit.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Generator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Key of the session-level advisory lock that serialises migration runs across processes.
_MIGRATION_LOCK_KEY = 0x7469636B  # "tick"


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(typ, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


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


@dataclass(frozen=True)
class Migration:
    track: str
    version: int
    name: str
    sql: str
    # applied after every run, not once: a track's GRANTS_FILE, what the runtime role may do
    repeatable: bool = False


# The first line of a migration that must run outside a transaction (one statement).
WITHOUT_TRANSACTION = "-- migrate: without a transaction"

# A migrations folder's grants to the runtime role (``${runtime}`` stands for it), applied after
# every migration run, so that privileges always match the tables the migrations left.
GRANTS_FILE = "grants.sql"


def _load_dir(track: str, files: list[tuple[str, str]]) -> list[Migration]:
    out = []
    grants = None
    for fname, text in files:
        if fname == GRANTS_FILE:
            grants = Migration(track, 0, fname, text, repeatable=True)
            continue
        m = _MIGRATION_RE.match(fname)
        if m is None:
            continue
        out.append(Migration(track, int(m.group(1)), fname, text))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in track {track!r}: {versions}")
    return out + ([grants] if grants is not None else [])


def shared_migrations() -> list[Migration]:
    """Tables every service has: outbox, inbox, idempotency keys, schema bookkeeping."""
    root = resources.files("ticketing_shared") / "migrations"
    files = [(p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".sql")]
    return _load_dir("shared", files)


def dir_migrations(track: str, directory: Path) -> list[Migration]:
    if not directory.is_dir():
        return []
    files = [(p.name, p.read_text()) for p in directory.iterdir() if p.suffix == ".sql"]
    return _load_dir(track, files)


async def migrate(
    dsn: str, migrations: list[Migration], *, runtime_role: str | None = None
) -> list[str]:
    """Apply pending migrations in order, each in its own transaction, under an advisory lock;
    then, given the service's ``runtime_role``, grant it exactly what the tracks' grants say.

    ``dsn`` is the owner role's (the tables' owner; never the role the service runs as). Safe to
    run from several processes at once: the lock serialises them and the second finds nothing
    left to do. Returns the names applied.
    """
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    track text NOT NULL,
                    version integer NOT NULL,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now(),
                    PRIMARY KEY (track, version)
                )
                """
            )
            done = {
                (r["track"], r["version"])
                for r in await conn.fetch("SELECT track, version FROM schema_migrations")
            }
            for mig in migrations:
                if mig.repeatable or (mig.track, mig.version) in done:
                    continue
                record = (
                    "INSERT INTO schema_migrations (track, version, name) VALUES ($1, $2, $3)",
                    mig.track,
                    mig.version,
                    mig.name,
                )
                if mig.sql.startswith(WITHOUT_TRANSACTION):
                    # one statement PostgreSQL runs only outside a transaction (an index built
                    # CONCURRENTLY, without blocking writes); written to be run again if need be
                    await conn.execute(mig.sql)
                    await conn.execute(*record)
                else:
                    async with conn.transaction():
                        # a migration sees and may change every tenant's rows (row-level
                        # security binds the owner too: the policies are FORCE'd)
                        await set_tenant(conn, ALL_TENANTS)
                        await conn.execute(mig.sql)
                        await conn.execute(*record)
                applied.append(f"{mig.track}/{mig.name}")
                log.info("db.migration_applied", extra={"migration": f"{mig.track}/{mig.name}"})
            if runtime_role is not None:
                await _grant(conn, runtime_role, [m for m in migrations if m.repeatable])
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    finally:
        await conn.close()
    return applied


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _grant(conn: asyncpg.Connection, role: str, grants: list[Migration]) -> None:
    """Everything the runtime role had is taken back, then what the grants files list is given,
    in one transaction: privileges are exactly those, whatever an earlier release granted. Only
    the runtime and owner roles may connect to the database."""
    runtime = _ident(role)
    database = _ident(await conn.fetchval("SELECT current_database()"))
    async with conn.transaction():
        await conn.execute(
            f"""
            REVOKE ALL ON DATABASE {database} FROM PUBLIC;
            GRANT CONNECT ON DATABASE {database} TO {runtime};
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            GRANT USAGE ON SCHEMA public TO {runtime};
            REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {runtime};
            REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {runtime};
            """
        )
        for grant in grants:
            await conn.execute(Template(grant.sql).substitute(runtime=runtime))


_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")


def role_dsn(admin_dsn: str, database: str, role: str) -> str:
    """The DSN of ``database`` as ``role`` on the admin DSN's server (local stack and tests,
    where authentication is by trust; deployments give each service its own URL)."""
    scheme, _, rest = admin_dsn.partition("://")
    hostpart = rest.split("@", 1)[-1].split("/", 1)[0]
    return f"{scheme}://{role}@{hostpart}/{database}"


def owner_role(runtime: str) -> str:
    """The name of the role that owns a runtime role's tables, where one names both (the local
    stack and the tests: ``orders`` runs the service, ``orders_owner`` migrates it)."""
    return f"{runtime}_owner"


async def ensure_database(admin_dsn: str, name: str, *, owner: str, runtime: str) -> bool:
    """Create database ``name`` if missing (used by the local stack and tests); True if created.

    Two login roles, created if missing, neither a superuser nor able to bypass row-level
    security: ``owner`` owns the database and everything in it and runs the migrations;
    ``runtime`` is what the service connects as, granted only what it uses (:func:`migrate`), so
    the policies bind it and it cannot turn them off. Objects owned by anyone else (a database
    migrated by an earlier release, when the service ran as the owner) are handed to ``owner``.
    """
    for ident in (name, owner, runtime):
        if not _NAME_RE.fullmatch(ident):
            raise ValueError(f"bad database or role name {ident!r}")
    if owner == runtime:
        raise ValueError("the runtime role must not be the owner role")
    conn = await asyncpg.connect(admin_dsn)
    try:
        for role in (owner, runtime):
            with suppress(asyncpg.DuplicateObjectError):
                await conn.execute(
                    f'CREATE ROLE "{role}" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS'
                )
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        created = False
        if not exists:
            try:
                await conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
                created = True
            except asyncpg.DuplicateDatabaseError:
                pass
        if not created:
            await conn.execute(f'ALTER DATABASE "{name}" OWNER TO "{owner}"')
            await _hand_over(role_dsn(admin_dsn, name, user_of(admin_dsn)), owner)
        return created
    finally:
        await conn.close()


def user_of(dsn: str) -> str:
    """The role a URL DSN connects as: its user part (percent-decoded), else its ``user``
    parameter, else libpq's default (``PGUSER``, else the name of the user running us)."""
    url = urlsplit(dsn)
    if url.username:
        return unquote(url.username)
    if named := parse_qs(url.query).get("user"):
        return named[-1]
    return os.environ.get("PGUSER") or getpass.getuser()


async def _hand_over(admin_dsn_of_db: str, owner: str) -> None:
    """Give ``owner`` the tables, sequences and functions of schema public it does not own yet
    (a database migrated when services still connected as the superuser)."""
    conn = await asyncpg.connect(admin_dsn_of_db)
    try:
        rows = await conn.fetch(
            """
            SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' ELSE 'TABLE' END AS kind,
                   quote_ident(c.relname) AS name
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S', 'v')
              AND pg_get_userbyid(c.relowner) <> $1
              AND NOT (c.relkind = 'S' AND EXISTS (
                  SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype IN ('a', 'i')))
            UNION ALL
            SELECT 'FUNCTION', p.oid::regprocedure::text
            FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> $1
            """,
            owner,
        )
        for r in rows:
            await conn.execute(f'ALTER {r["kind"]} {r["name"]} OWNER TO "{owner}"')
    finally:
        await conn.close()


class PrivilegedRole(RuntimeError):
    """The service would connect as a role that row-level security does not bind."""


async def check_runtime_role(pool: asyncpg.Pool) -> None:
    """Refuse to run as a role the row-level security policies cannot hold: a superuser, a role
    with BYPASSRLS, or one that owns (or may act as the owner of) the database or its tables,
    which could simply switch the policies off (``ALTER TABLE … NO FORCE ROW LEVEL SECURITY``)."""
    row = await pool.fetchrow(
        """
        SELECT r.rolname, r.rolsuper, r.rolbypassrls,
               pg_has_role(r.oid, d.datdba, 'MEMBER') AS owns_database,
               ARRAY(SELECT c.relname::text FROM pg_class c
                     JOIN pg_namespace n ON n.oid = c.relnamespace
                     WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                       AND pg_has_role(r.oid, c.relowner, 'MEMBER')
                     ORDER BY 1) AS owned_tables
        FROM pg_roles r, pg_database d
        WHERE r.rolname = current_user AND d.datname = current_database()
        """
    )
    assert row is not None
    problems = []
    if row["rolsuper"]:
        problems.append("is a superuser")
    if row["rolbypassrls"]:
        problems.append("bypasses row-level security")
    if row["owns_database"]:
        problems.append("owns the database")
    if row["owned_tables"]:
        problems.append(f"owns tables ({', '.join(row['owned_tables'][:5])}…)")
    if problems:
        raise PrivilegedRole(
            f"refusing to run as database role {row['rolname']!r}: it {' and '.join(problems)}; "
            "connect as the service's runtime role (migrations run as the owner role)"
        )


def set_clause(fields: dict[str, Any], *, first: int) -> tuple[str, list[Any]]:
    """``"a = $first, b = $first+1"`` and the values, for an UPDATE of ``fields``.

    Column names come from the code (never from a request); values are always parameters.
    Each assignment is followed by ``, `` so callers append ``updated_at = now()``.
    """
    cols = list(fields)
    return "".join(f"{c} = ${first + i}, " for i, c in enumerate(cols)), [fields[c] for c in cols]


def row_to_dict(row: asyncpg.Record | None) -> dict[str, Any] | None:
    return dict(row) if row is not None else None
