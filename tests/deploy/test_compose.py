"""docker-compose.yml without Docker: what each container mounts, how it meets Kafka and
PostgreSQL.

The keys job's generator runs here into a temporary folder standing for the named volumes,
deploy/compose/kafka-setup.sh runs against stand-in Kafka tools that record what it asks, and
deploy/compose/initdb.sh runs against a fresh PostgreSQL cluster of our own.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import stat
import subprocess
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import yaml

from ticketing_local.compose_secrets import ensure_compose_secrets
from ticketing_local.embedded import EmbeddedPostgres, free_port
from ticketing_shared import db, kafka
from ticketing_shared.cli import run_cli
from ticketing_shared.contracts import ALL_TOPICS, dlq_topic

from .access import SERVICES, expected

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "deploy/compose/kafka-setup.sh"
INIT_SCRIPT = REPO / "deploy/compose/initdb.sh"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def _service_containers(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every container of a service (api, worker, migrate) → (service, definition)."""
    out = {}
    for name, definition in compose["services"].items():
        service, _, role = name.partition("-")
        if service in SERVICES:
            assert role in ("api", "worker", "migrate"), name
            out[name] = (service, definition)
    assert len(out) == 12
    return out


@pytest.fixture(scope="module")
def volumes(compose: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Named volume → the folder the keys job's generator filled for it."""
    root = tmp_path_factory.mktemp("volumes")
    job = compose["services"]["keys"]
    assert job["command"][:3] == ["python", "-m", "ticketing_local.compose_secrets"]
    args = dict(zip(job["command"][3::2], job["command"][4::2], strict=True))
    ensure_compose_secrets(root / args["--keys"].strip("/"), root / args["--out"].strip("/"))
    mounts = {}
    for mount in job["volumes"]:
        volume, target = mount.split(":")[:2]
        mounts[volume] = root / target.strip("/")
    return mounts


def _mounts(definition: dict[str, Any]) -> list[tuple[str, str, bool]]:
    out = []
    for mount in definition.get("volumes", []):
        parts = mount.split(":")
        out.append((parts[0], parts[1], parts[2:] == ["ro"]))
    return out


def _defaults(value: str) -> str:
    """Compose's interpolation of ``${NAME:-default}`` where NAME is not set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _own_volume(name: str, service: str) -> str:
    """The one volume a service container mounts: the API's and worker's, or the migrate job's."""
    return f"{service}-migrate-keys" if name.endswith("-migrate") else f"{service}-keys"


def test_service_containers_mount_only_their_own_keys_read_only(compose: dict[str, Any]) -> None:
    for name, (service, definition) in _service_containers(compose).items():
        assert _mounts(definition), name
        for source, target, read_only in _mounts(definition):
            assert (source, target) == (_own_volume(name, service), "/keys"), (
                f"{name} mounts {source}"
            )
            assert read_only, f"{name} may write {source}"


def test_secret_volumes_are_mounted_where_they_are_needed_only(compose: dict[str, Any]) -> None:
    mounted_by: dict[str, set[str]] = defaultdict(set)
    for name, definition in compose["services"].items():
        for source, _, _ in _mounts(definition):
            mounted_by[source].add(name)
    assert mounted_by["postgres-secrets"] == {"keys", "postgres"}
    assert mounted_by["kafka-secrets"] == {"keys", "kafka", "kafka-setup"}
    for service in SERVICES:
        assert mounted_by[f"{service}-keys"] == {"keys", f"{service}-api", f"{service}-worker"}
        assert mounted_by[f"{service}-migrate-keys"] == {"keys", f"{service}-migrate"}


def test_the_image_prepares_every_folder_the_keys_job_writes_into(compose: dict[str, Any]) -> None:
    # a fresh named volume takes the ownership of the image's folder it is mounted on; one the
    # image lacks would be root's, and the keys job (not root) could not write into it
    dockerfile = (REPO / "Dockerfile").read_text()
    prepared = set(re.findall(r"(?<=\s)(/(?:keys|secrets)[\w/-]*)", dockerfile))
    for _, target, _ in _mounts(compose["services"]["keys"]):
        assert target in prepared, target


def test_no_service_container_sees_a_private_key_it_must_not_have(
    compose: dict[str, Any], volumes: dict[str, Path]
) -> None:
    keys = volumes["keys"]
    forbidden = {
        (keys / "jwt-private.pem").read_bytes(): "the JWT private key",
        (keys / "wechat/platform-private.pem").read_bytes(): "the WeChat Pay platform private key",
    }
    for name, (service, definition) in _service_containers(compose).items():
        for source, _target, _ in _mounts(definition):
            for path in volumes[source].rglob("*"):
                if not path.is_file():
                    continue
                content = path.read_bytes()
                assert content not in forbidden, f"{name} sees {forbidden.get(content)} ({path})"
                if b"PRIVATE KEY" in content:
                    # the one private key a service holds: payments' own WeChat Pay merchant key
                    assert (service, path.name) == ("payments", "merchant-private.pem"), path
    # ...and both are where they belong: with the sandboxes and the token minting
    for sandbox in ("wechat-sandbox", "mollie-sandbox"):
        assert ("keys", "/keys", True) in _mounts(compose["services"][sandbox])


def _environment(definition: dict[str, Any]) -> dict[str, str]:
    return {k: _defaults(str(v)) for k, v in definition["environment"].items()}


def _container_settings(
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    definition: dict[str, Any],
    volumes: dict[str, Path],
    *,
    database_at: str | None = None,
) -> Any:
    """The service's settings as container ``name`` builds them: its environment, /keys being
    its own volume, and libpq's variables as it has them (``database_at``: the host:port that
    stands for the compose network's postgres)."""
    service = name.partition("-")[0]
    own = volumes[_own_volume(name, service)]
    for key in list(os.environ):
        if key.startswith(("KAFKA_", "JWT_", "APP_ENV", "PG", f"{service.upper()}_")):
            monkeypatch.delenv(key)
    for key, value in _environment(definition).items():
        value = value.replace("/keys/", f"{own}/")
        if database_at is not None:
            value = value.replace("@postgres:5432/", f"@{database_at}/")
        monkeypatch.setenv(key, value)
    return importlib.import_module(f"{service}.settings").Settings()


def test_each_service_is_its_own_kafka_user_and_its_settings_accept_the_compose_env(
    compose: dict[str, Any], volumes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    users: dict[str, set[str]] = defaultdict(set)
    for name, (service, definition) in _service_containers(compose).items():
        env = _environment(definition)
        if name.endswith("-migrate"):
            # migrations never talk to Kafka, so they get no Kafka credentials either
            assert not any(k.startswith(("KAFKA_SASL", "KAFKA_SECURITY")) for k in env), name
            continue
        assert env["KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL"), name
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        users[env["KAFKA_SASL_USERNAME"]].add(service)
        settings = _container_settings(monkeypatch, name, definition, volumes)
        options = kafka.client_options(settings)
        assert options["sasl_plain_username"] == service
        assert (
            options["sasl_plain_password"]
            == (volumes["kafka-secrets"] / "users" / service).read_text()
        )
    assert users == {s: {s} for s in SERVICES}


def test_the_broker_refuses_what_no_acl_allows(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith(".StandardAuthorizer")
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(protocols.values()) <= {"SASL_PLAINTEXT", "SASL_SSL"}
    assert env["KAFKA_LISTENER_NAME_CLIENT_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    # the services' bootstrap address is the SCRAM listener
    assert "CLIENT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert compose["x-common-env"]["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    # the image turns KAFKA_* variables into server.properties but drops any value holding "="
    assert not [k for k, v in env.items() if "=" in str(v)]


def _run_setup(tmp_path: Path, secrets: Path) -> list[list[str]]:
    """kafka-setup.sh against stand-ins of the Kafka tools; returns each call's arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for tool in ("kafka-topics.sh", "kafka-configs.sh", "kafka-acls.sh"):
        stub = bin_dir / tool
        stub.write_text(
            '#!/usr/bin/env bash\nprintf "%s\\037" "$(basename "$0")" "$@" >> "$CALLS"\n'
            'printf "\\n" >> "$CALLS"\n'
        )
        stub.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(bin_dir),
        "KAFKA_SECRETS_DIR": str(secrets),
        "CALLS": str(log),
    }
    subprocess.run(["bash", str(SETUP_SCRIPT)], env=env, check=True, capture_output=True)
    return [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]


def _option(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


def test_the_setup_grants_each_service_only_what_its_code_needs(
    tmp_path: Path, volumes: dict[str, Path]
) -> None:
    calls = _run_setup(tmp_path, volumes["kafka-secrets"])
    topics = {_option(c, "--topic")[0]: c for c in calls if c[0] == "kafka-topics.sh"}
    assert set(topics) == {*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)}
    assert all(_option(c, "--partitions") == ["6"] for c in topics.values())

    scram = {
        _option(c, "--entity-name")[0]: _option(c, "--add-config")[0]
        for c in calls
        if c[0] == "kafka-configs.sh"
    }
    for service in SERVICES:
        password = (volumes["kafka-secrets"] / "users" / service).read_text()
        assert re.fullmatch(
            rf"SCRAM-SHA-512=\[iterations=\d+,password={password}\]", scram[service]
        )

    granted: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for call in (c for c in calls if c[0] == "kafka-acls.sh"):
        assert "--add" in call and "--deny-principal" not in call
        assert "--cluster" not in call and "--resource-pattern-type" not in call  # literal only
        (principal,) = _option(call, "--allow-principal")
        resources = [("topic", t) for t in _option(call, "--topic")]
        resources += [("group", g) for g in _option(call, "--group")]
        assert len(resources) == 1, call
        for operation in _option(call, "--operation"):
            granted[principal.removeprefix("User:")].add((operation, *resources[0]))

    assert set(granted) == set(SERVICES)
    for service in SERVICES:
        want = expected(service)
        ops = granted[service]
        assert {op for op, _, _ in ops} <= {"Read", "Write", "Describe"}, service
        assert {n for op, kind, n in ops if op == "Write" and kind == "topic"} == want.writes
        assert {n for op, kind, n in ops if op == "Read" and kind == "topic"} == want.reads
        assert {n for op, kind, n in ops if kind == "group"} == {want.group}
        # of the event topics (not the DLQs), it writes its own at most
        written_events = {t for t in want.writes if t in ALL_TOPICS}
        assert len(written_events) <= 1 and all(t.startswith(service) for t in written_events)


# ---------------------------------------------------------------------------------------------
# PostgreSQL: per service an owner role (migrations) and a runtime role (API, worker), with
# passwords the keys job makes at run time
# ---------------------------------------------------------------------------------------------


def _pgpass(path: Path) -> list[tuple[str, ...]]:
    """The entries of a libpq password file: (host, port, database, user, password)."""
    lines = path.read_text().splitlines()
    return [tuple(line.split(":")) for line in lines if line and not line.startswith("#")]


def _passfile(name: str, definition: dict[str, Any], volumes: dict[str, Path]) -> Path:
    """The password file container ``name`` reads (PGPASSFILE, in its own volume)."""
    passfile = _environment(definition)["PGPASSFILE"]
    assert passfile.startswith("/keys/"), name
    return volumes[_own_volume(name, name.partition("-")[0])] / passfile.removeprefix("/keys/")


def _role_password(volumes: dict[str, Path], role: str) -> str:
    return (volumes["postgres-secrets"] / "roles" / role).read_text()


def _sees(volume: Path, secret: str) -> bool:
    return any(secret.encode() in p.read_bytes() for p in volume.rglob("*") if p.is_file())


def test_api_and_worker_connect_as_the_runtime_role_without_owner_credentials(
    compose: dict[str, Any], volumes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, (service, definition) in _service_containers(compose).items():
        if name.endswith("-migrate"):
            continue
        owner = db.owner_role(service)
        settings = _container_settings(monkeypatch, name, definition, volumes)
        url = urlsplit(settings.database_url)
        assert (url.username, url.password, url.path) == (service, None, f"/{service}"), name
        assert settings.migration_database_url is None, name
        passfile = _passfile(name, definition, volumes)
        password = _role_password(volumes, service)
        assert _pgpass(passfile) == [("*", "*", service, service, password)], name
        # libpq and asyncpg ignore a password file that others may read
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600, passfile
        for source, _, _ in _mounts(definition):
            assert not _sees(volumes[source], _role_password(volumes, owner)), name


def test_migrate_jobs_connect_as_the_owner_role_and_nothing_else(
    compose: dict[str, Any], volumes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, (service, definition) in _service_containers(compose).items():
        if not name.endswith("-migrate"):
            # the API and the worker start once their migrations are through
            assert definition["depends_on"][f"{service}-migrate"] == {
                "condition": "service_completed_successfully"
            }, name
            continue
        owner = db.owner_role(service)
        settings = _container_settings(monkeypatch, name, definition, volumes)
        url = urlsplit(settings.migration_dsn())
        assert (url.username, url.password, url.path) == (owner, None, f"/{service}"), name
        # the runtime DSN only names the role the migrations grant to
        assert db.user_of(settings.database_url) == service
        passfile = _passfile(name, definition, volumes)
        assert _pgpass(passfile) == [("*", "*", service, owner, _role_password(volumes, owner))]
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600, passfile
        # its volume holds that file and nothing else: no Kafka password, no runtime password
        (source, _, _), *_ = _mounts(definition)
        assert [p.name for p in volumes[source].rglob("*")] == [passfile.name], name
        assert definition["depends_on"] == {
            "keys": {"condition": "service_completed_successfully"},
            "postgres": {"condition": "service_healthy"},
        }


def test_no_password_is_committed(compose: dict[str, Any]) -> None:
    files = [REPO / "docker-compose.yml", *sorted((REPO / "deploy/compose").iterdir())]
    for path in files:
        text = path.read_text()
        assert not re.search(r"\w+://[^\s/@:]+:[^\s/@]*@", text), f"a URL with a password in {path}"
        assert not re.search(r"PASSWORD\s+'", text, re.IGNORECASE), f"a SQL password in {path}"
    # passwords reach containers as files only
    for name, definition in compose["services"].items():
        environment = definition.get("environment", {})
        for key in environment:
            assert "PASSWORD" not in key or key.endswith("_FILE"), f"{name}: {key}"


def test_postgres_takes_its_passwords_from_the_keys_job(
    compose: dict[str, Any], volumes: dict[str, Path]
) -> None:
    postgres = compose["services"]["postgres"]
    assert postgres["depends_on"]["keys"] == {"condition": "service_completed_successfully"}
    (secrets,) = [t for s, t, ro in _mounts(postgres) if s == "postgres-secrets" and ro]
    superuser = postgres["environment"]["POSTGRES_PASSWORD_FILE"]
    assert superuser.startswith(f"{secrets}/")
    assert (volumes["postgres-secrets"] / superuser.removeprefix(f"{secrets}/")).read_text()
    # the init script reads the roles' passwords where the volume is mounted...
    assert f"${{POSTGRES_SECRETS_DIR:-{secrets}}}" in INIT_SCRIPT.read_text()
    # ...and is executable, so the image runs it instead of sourcing it into its own shell
    (init,) = [t for s, t, ro in _mounts(postgres) if s.endswith(INIT_SCRIPT.name) and ro]
    assert init.startswith("/docker-entrypoint-initdb.d/") and init.endswith(".sh")
    assert os.access(INIT_SCRIPT, os.X_OK)
    passwords = [p.read_text() for p in (volumes["postgres-secrets"] / "roles").iterdir()]
    assert len(passwords) == 2 * len(SERVICES) == len(set(passwords))
    assert all(re.fullmatch(r"[0-9a-f]{48}", p) for p in passwords)


@pytest.fixture(scope="module")
def cluster(
    compose: dict[str, Any], volumes: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmbeddedPostgres]:
    """A fresh cluster initialised as the postgres container is: deploy/compose/initdb.sh, run
    with that container's environment as the superuser over the Unix socket."""
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"), free_port(), durable=False)
    pg.init()
    # the image's authentication: the superuser inside the container needs no password, every
    # other container (here: every TCP client) needs its role's
    (pg.data_dir / "pg_hba.conf").write_text(
        "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
    )
    pg.start()
    try:
        environment = compose["services"]["postgres"]["environment"]
        env = {
            # the psql of the server's own installation first (the client may not be on PATH)
            "PATH": f"{pg.bin}{os.pathsep}{os.environ['PATH']}",
            "POSTGRES_USER": environment["POSTGRES_USER"],
            "POSTGRES_DB": environment["POSTGRES_DB"],
            "POSTGRES_SECRETS_DIR": str(volumes["postgres-secrets"]),
            "PGHOST": str(pg.socket_dir),
            "PGPORT": str(pg.port),
        }
        subprocess.run([str(INIT_SCRIPT)], env=env, check=True, capture_output=True, timeout=60)
        yield pg
    finally:
        pg.destroy()


async def _as_superuser(pg: EmbeddedPostgres, database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(
        host=str(pg.socket_dir), port=pg.port, user="postgres", database=database
    )


async def test_the_init_script_makes_an_owner_and_a_runtime_role_per_database(
    cluster: EmbeddedPostgres,
) -> None:
    conn = await _as_superuser(cluster)
    try:
        for service in SERVICES:
            owner = db.owner_role(service)
            roles = await conn.fetch(
                """
                SELECT rolname, rolcanlogin, rolpassword IS NOT NULL AS has_password, rolsuper,
                       rolbypassrls, rolcreatedb, rolcreaterole
                FROM pg_authid WHERE rolname = ANY($1::text[])
                """,
                [owner, service],
            )
            assert {r["rolname"] for r in roles} == {owner, service}
            for r in roles:
                assert tuple(r.values())[1:] == (True, True, False, False, False, False), r
            assert not await conn.fetchval("SELECT pg_has_role($1, $2, 'MEMBER')", service, owner)
            database_owner = await conn.fetchval(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", service
            )
            assert database_owner == owner
            may_connect = await conn.fetch(
                """
                SELECT rolname FROM pg_roles
                WHERE NOT rolsuper AND has_database_privilege(oid, $1, 'CONNECT')
                """,
                service,
            )
            assert {r["rolname"] for r in may_connect} == {owner, service}
    finally:
        await conn.close()


async def test_migrations_run_as_the_owner_and_the_services_as_the_runtime_role(
    cluster: EmbeddedPostgres,
    compose: dict[str, Any],
    volumes: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    at = f"127.0.0.1:{cluster.port}"
    for service in SERVICES:
        owner = db.owner_role(service)
        main = importlib.import_module(f"{service}.__main__")
        job = f"{service}-migrate"
        settings = _container_settings(
            monkeypatch, job, compose["services"][job], volumes, database_at=at
        )
        # `python -m <service> migrate` as the job runs it (asyncio.run: its own thread here)
        code = await asyncio.to_thread(
            run_cli,
            service=service,
            settings_factory=main.Settings,
            api_factory=main.create_app,
            worker_factory=main.create_worker,
            migrations_dir=main.MIGRATIONS,
            argv=["migrate"],
        )
        assert code == 0
        conn = await _as_superuser(cluster, service)
        try:
            owners = await conn.fetch(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            )
            assert [r["tableowner"] for r in owners] == [owner]
        finally:
            await conn.close()
        # the start-up check of the API and the worker would refuse the owner...
        pool = await db.create_pool(settings.migration_dsn(), min_size=1, max_size=1)
        try:
            with pytest.raises(db.PrivilegedRole):
                await db.check_runtime_role(pool)
        finally:
            await pool.close()
        # ...and accepts what they connect as, with the password of their own volume
        for name in (f"{service}-api", f"{service}-worker"):
            settings = _container_settings(
                monkeypatch, name, compose["services"][name], volumes, database_at=at
            )
            pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
            try:
                await db.check_runtime_role(pool)
                assert await pool.fetchval("SELECT current_user") == service
            finally:
                await pool.close()


async def test_a_service_role_connects_to_its_own_database_only(
    cluster: EmbeddedPostgres, compose: dict[str, Any], volumes: dict[str, Path]
) -> None:
    for name, (service, definition) in _service_containers(compose).items():
        ((*_, database, role, password),) = _pgpass(_passfile(name, definition, volumes))
        assert database == service
        for other in SERVICES:
            dsn = f"postgresql://{role}@127.0.0.1:{cluster.port}/{other}"
            if other != service:
                # the right password, and still no way in
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await asyncpg.connect(dsn, password=password)
                continue
            with pytest.raises(asyncpg.InvalidPasswordError):
                await asyncpg.connect(dsn, password="not-" + password)
            conn = await asyncpg.connect(dsn, password=password)
            await conn.close()
