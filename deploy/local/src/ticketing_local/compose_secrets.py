"""docker-compose's credentials, made at run time (never committed): each container gets its own.

``python -m ticketing_local.compose_secrets --keys /keys --out /secrets`` (the compose `keys`
job) writes, keeping what is already there:

- ``/keys``: every dev key (:mod:`ticketing_local.keys`), for the provider sandboxes and for
  minting dev tokens, and for nothing else: the JWT private key and the WeChat Pay platform
  private key live only here;
- ``/secrets/<service>/`` (one volume per service, mounted read-only at ``/keys`` in that
  service's containers): ``jwt-public.pem``, ``kafka-password`` (its SCRAM user's) and, for
  payments only, the keys its settings read: ``wechat/wechat.json``,
  ``wechat/merchant-private.pem``, ``wechat/platform-public.pem``, ``wechat/apiv3.key``,
  ``mollie/mollie.json``;
- ``/secrets/kafka/``: ``admin-password`` and ``users/<service>`` for the broker and its setup
  job, which creates each service's SCRAM user with that password;
- PostgreSQL, two login roles per service: ``<service>`` (the runtime role the API and the worker
  connect as) and ``<service>_owner`` (owns the database; the migrations run as it). Their
  passwords and the superuser's are kept in ``/secrets/postgres/`` (``superuser-password``,
  ``roles/<role>``; mounted only into the postgres container, whose init script creates the roles
  with them, and into this job). Each container gets its one role's password as a libpq password
  file, ``pgpass``, read by asyncpg through ``PGPASSFILE``: the API and the worker the runtime
  role's in ``/secrets/<service>/``, the migrate job the owner's in ``/secrets/<service>-migrate/``
  (its volume, which holds nothing else).
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from ticketing_shared import db

from .keys import ensure_keys

SERVICES = ("orders", "payments", "refunds", "notifications")

#: what each service's containers get from the dev keys, besides the JWT public key
SERVICE_KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("invite-secret",),
    "payments": (
        "wechat/wechat.json",
        "wechat/merchant-private.pem",
        "wechat/platform-public.pem",
        "wechat/apiv3.key",
        "mollie/mollie.json",
    ),
    "refunds": (),
    "notifications": ("invite-secret",),
}

# The broker and its setup job run as the Kafka image's own user, not as this image's: their
# volume's files are world-readable (the volume is mounted in those two containers only). The
# same holds for PostgreSQL's.
_KAFKA_FILE_MODE = 0o644
_POSTGRES_FILE_MODE = 0o644


def _write(path: Path, content: str | bytes, mode: int) -> None:
    """Write ``path`` whole, with ``mode`` from the moment it exists (never readable by others in
    between): a new file beside it, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode() if isinstance(content, str) else content
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(fresh, path)
    except BaseException:
        fresh.unlink(missing_ok=True)
        raise


def _password(path: Path, mode: int = 0o600) -> str:
    """The password kept in ``path``, made once (hex: safe in JAAS, kafka-configs, pgpass, SQL)."""
    if path.exists():
        return path.read_text().strip()
    password = secrets.token_hex(24)
    _write(path, password, mode)
    return password


def _pgpass(path: Path, database: str, role: str, password: str) -> None:
    """A libpq password file holding one role's password for one database. Any host and port:
    the DSNs name the compose network's ``postgres``; hex needs no escaping. 0600, as libpq and
    asyncpg ignore a password file that others may read."""
    _write(path, f"*:*:{database}:{role}:{password}\n", 0o600)


def ensure_compose_secrets(keys: Path, out: Path) -> None:
    ensure_keys(keys)
    kafka = out / "kafka"
    postgres = out / "postgres"
    for service in SERVICES:
        own = out / service
        for name in ("jwt-public.pem", *SERVICE_KEYS[service]):
            # again each run: a new dev key follows
            _write(own / name, (keys / name).read_bytes(), 0o600)
        password = _password(own / "kafka-password")
        _write(kafka / "users" / service, password, _KAFKA_FILE_MODE)
        # The roles' passwords are kept in the postgres volume: its init script gave them to the
        # roles when the data volume was new, so every later run must hand out the same ones.
        runtime, owner = service, db.owner_role(service)
        roles = postgres / "roles"
        _pgpass(own / "pgpass", service, runtime, _password(roles / runtime, _POSTGRES_FILE_MODE))
        _pgpass(
            out / f"{service}-migrate" / "pgpass",
            service,
            owner,
            _password(roles / owner, _POSTGRES_FILE_MODE),
        )
    _password(kafka / "admin-password", _KAFKA_FILE_MODE)
    _password(postgres / "superuser-password", _POSTGRES_FILE_MODE)


def main() -> None:
    parser = argparse.ArgumentParser(description="generate docker-compose's keys and passwords")
    parser.add_argument("--keys", type=Path, required=True, help="every dev key (sandboxes)")
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="one folder per service and migrate job, kafka, postgres",
    )
    args = parser.parse_args()
    ensure_compose_secrets(args.keys, args.out)
    folders = [*SERVICES, *(f"{s}-migrate" for s in SERVICES), "kafka", "postgres"]
    print(f"compose secrets in {args.out}: {', '.join(folders)}")


if __name__ == "__main__":
    main()
