"""Databases, roles and migrations: each service's database with an owner role (migrations) and
a runtime role (its processes), migrations applied once whatever the number of runners, and the
runtime role's grants re-applied after every run. ``ticketing_shared.db`` re-exports it."""

from __future__ import annotations

import getpass
import logging
import os
import re
from contextlib import suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Key of the session-level advisory lock that serialises migration runs across processes.
_MIGRATION_LOCK_KEY = 0x7469636B  # "tick"


@dataclass(frozen=True)
class Migration:
    track: str
    version: int
    name: str
    sql: str
    # "numbered": applied once; "functions": a track's FUNCTIONS_FILE, re-created on every run
    # before the track's numbered migrations; "grants": a track's GRANTS_FILE, re-applied after
    # every run (what the runtime role may do)
    kind: Literal["numbered", "functions", "grants"] = "numbered"

    @property
    def repeatable(self) -> bool:
        return self.kind != "numbered"


# The first line of a migration that must run outside a transaction (one statement).
WITHOUT_TRANSACTION = "-- migrate: without a transaction"

# A migrations folder's functions (and nothing else): the one definition of each, re-created
# with CREATE OR REPLACE on every run, before the track's pending numbered migrations, so that
# those may use them (policies, triggers) and no migration ever holds a copy. Bodies are not
# checked at creation (the tables they read may not exist yet); the tests call every one.
FUNCTIONS_FILE = "functions.sql"

# A migrations folder's grants to the runtime role (``${runtime}`` stands for it), applied after
# every migration run, so that privileges always match the tables the migrations left.
GRANTS_FILE = "grants.sql"


def _load_dir(track: str, files: list[tuple[str, str]]) -> list[Migration]:
    out = []
    functions = grants = None
    for fname, text in files:
        if fname == GRANTS_FILE:
            grants = Migration(track, 0, fname, text, kind="grants")
            continue
        if fname == FUNCTIONS_FILE:
            functions = Migration(track, 0, fname, text, kind="functions")
            continue
        m = _MIGRATION_RE.match(fname)
        if m is None:
            continue
        out.append(Migration(track, int(m.group(1)), fname, text))
    out.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration numbers in track {track!r}: {versions}")
    return (
        ([functions] if functions is not None else [])
        + out
        + ([grants] if grants is not None else [])
    )


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
    from .db import ALL_TENANTS, set_tenant  # db re-exports this module: imported here

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
                if mig.kind == "functions":
                    async with conn.transaction():
                        await conn.execute("SET LOCAL check_function_bodies = off")
                        await conn.execute(mig.sql)
                    continue
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
                await _grant(conn, runtime_role, [m for m in migrations if m.kind == "grants"])
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
