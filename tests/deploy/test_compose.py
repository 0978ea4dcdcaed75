"""docker-compose.yml without Docker: what each container mounts and how it meets Kafka.

The keys job's generator runs here into a temporary folder standing for the named volumes, and
deploy/compose/kafka-setup.sh runs against stand-in Kafka tools that record what it asks.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from ticketing_local.compose_secrets import ensure_compose_secrets
from ticketing_shared import kafka
from ticketing_shared.contracts import ALL_TOPICS, dlq_topic

from .access import SERVICES, expected

REPO = Path(__file__).resolve().parents[2]
SETUP_SCRIPT = REPO / "deploy/compose/kafka-setup.sh"


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


def test_service_containers_mount_only_their_own_keys_read_only(compose: dict[str, Any]) -> None:
    for name, (service, definition) in _service_containers(compose).items():
        for source, _target, read_only in _mounts(definition):
            assert source == f"{service}-keys", f"{name} mounts {source}"
            assert read_only, f"{name} may write {source}"


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


def test_each_service_is_its_own_kafka_user_and_its_settings_accept_the_compose_env(
    compose: dict[str, Any], volumes: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    users: dict[str, set[str]] = defaultdict(set)
    for name, (service, definition) in _service_containers(compose).items():
        env = {k: _defaults(str(v)) for k, v in definition["environment"].items()}
        if name.endswith("-migrate"):
            # migrations never talk to Kafka, so they get no Kafka credentials either
            assert not any(k.startswith(("KAFKA_SASL", "KAFKA_SECURITY")) for k in env), name
            continue
        assert env["KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL"), name
        assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        users[env["KAFKA_SASL_USERNAME"]].add(service)
        # the settings as the container would build them, /keys being its own volume
        own = volumes[f"{service}-keys"]
        for key in list(os.environ):
            if key.startswith(("KAFKA_", "JWT_", "APP_ENV", f"{service.upper()}_")):
                monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value.replace("/keys/", f"{own}/"))
        settings = importlib.import_module(f"{service}.settings").Settings()
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
