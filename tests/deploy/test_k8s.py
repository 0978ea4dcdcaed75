"""deploy/k8s without a cluster: network policies, Kafka credentials, the Strimzi example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from .access import SERVICES, expected

K8S = Path(__file__).resolve().parents[2] / "deploy/k8s"


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "networkpolicies.yaml" in kustomization["resources"]
    docs = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / resource).read_text()) if d]
    return docs


def _of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod template (Deployments and Jobs) with its labels and spec."""
    return [o["spec"]["template"] for o in objects if o["kind"] in ("Deployment", "Job")]


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        present = labels.get(expr["key"])
        if expr["operator"] == "In" and present not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and present in expr["values"]:
            return False
        if expr["operator"] == "Exists" and present is None:
            return False
    return True


def _policies_for(
    objects: list[dict[str, Any]], labels: dict[str, str], kind: str
) -> list[dict[str, Any]]:
    return [
        p["spec"]
        for p in _of_kind(objects, "NetworkPolicy")
        if kind in p["spec"]["policyTypes"] and _selects(p["spec"]["podSelector"], labels)
    ]


def _ports(pod: dict[str, Any]) -> set[Any]:
    """A pod's container ports, by number and by name."""
    out: set[Any] = set()
    for c in pod["spec"]["containers"]:
        for p in c.get("ports", []):
            out |= {p["containerPort"], p.get("name")}
    return out


PROMETHEUS = {"namespaceSelector": {"matchLabels": {"ticketing/prometheus": "true"}}}


def test_ingress_is_denied_unless_a_policy_allows_it(objects: list[dict[str, Any]]) -> None:
    assert any(
        p["spec"]["podSelector"] == {}
        and p["spec"]["policyTypes"] == ["Ingress"]
        and not p["spec"].get("ingress")
        for p in _of_kind(objects, "NetworkPolicy")
    )


def test_every_api_is_reached_by_the_gateway_and_prometheus_only(
    objects: list[dict[str, Any]],
) -> None:
    (gateway,) = [
        p for p in _pods(objects) if p["metadata"]["labels"]["app.kubernetes.io/name"] == "gateway"
    ]
    apis = [
        p
        for p in _pods(objects)
        if p["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    ]
    assert {p["metadata"]["labels"]["app.kubernetes.io/name"] for p in apis} == set(SERVICES)
    for pod in apis:
        labels = pod["metadata"]["labels"]
        rules = [
            r for spec in _policies_for(objects, labels, "Ingress") for r in spec.get("ingress", [])
        ]
        from_gateway = False
        for rule in rules:
            assert rule.get("from"), f"{labels} open to anyone"
            assert {p["port"] for p in rule["ports"]} <= _ports(pod)
            for peer in rule["from"]:
                if peer == PROMETHEUS:
                    continue
                assert set(peer) == {"podSelector"}, peer
                assert _selects(peer["podSelector"], gateway["metadata"]["labels"]), peer
                from_gateway = True
        assert from_gateway, f"the gateway cannot reach {labels}"


def test_workers_are_reached_by_prometheus_only(objects: list[dict[str, Any]]) -> None:
    for pod in _pods(objects):
        labels = pod["metadata"]["labels"]
        if labels.get("app.kubernetes.io/component") != "worker":
            continue
        rules = [
            r for spec in _policies_for(objects, labels, "Ingress") for r in spec.get("ingress", [])
        ]
        assert rules and all(r.get("from") == [PROMETHEUS] for r in rules), labels


def test_service_pods_call_out_to_their_dependencies_only(objects: list[dict[str, Any]]) -> None:
    for pod in _pods(objects):
        labels = pod["metadata"]["labels"]
        service, role = labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]
        if service not in SERVICES:
            continue
        specs = _policies_for(objects, labels, "Egress")
        assert specs, f"{service}-{role}: egress unrestricted"
        ports = {p["port"] for s in specs for r in s.get("egress", []) for p in r["ports"]}
        allowed = {53, 5432, 9093}  # DNS, PostgreSQL, Kafka (TLS)
        if service == "payments" and role in ("api", "worker"):
            allowed.add(443)  # the providers
        if service == "notifications" and role == "worker":
            allowed |= {587, 465}  # the SMTP relay
        assert ports == allowed, f"{service}-{role}: {ports}"


def test_each_service_pod_uses_its_own_kafka_user(objects: list[dict[str, Any]]) -> None:
    config = dict(
        line.split("=", 1)
        for line in (K8S / "config.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert config["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    for pod in _pods(objects):
        service = pod["metadata"]["labels"]["app.kubernetes.io/name"]
        if service not in SERVICES:
            continue
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        secrets = {v["secret"]["secretName"] for v in volumes.values() if "secret" in v}
        assert not {f"ticketing-{s}" for s in SERVICES if s != service} & secrets, service
        (container,) = pod["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["KAFKA_SASL_USERNAME"] == f"ticketing-{service}"
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        for setting, secret in (
            ("KAFKA_SASL_PASSWORD_FILE", f"ticketing-{service}"),
            ("KAFKA_SSL_CAFILE", "kafka-cluster-ca"),
        ):
            directory, _, name = config[setting].rpartition("/")
            volume = mounts[directory]["secret"]
            assert volume["secretName"] == secret
            assert name in {i["path"] for i in volume["items"]}


def test_the_strimzi_example_grants_what_the_code_needs() -> None:
    docs = list(yaml.safe_load_all((K8S / "strimzi/kafka-users.yaml").read_text()))
    topics = {d["spec"]["topicName"] for d in docs if d["kind"] == "KafkaTopic"}
    users = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "KafkaUser"}
    assert set(users) == {f"ticketing-{s}" for s in SERVICES}
    for service in SERVICES:
        spec = users[f"ticketing-{service}"]
        assert spec["authentication"]["type"] == "scram-sha-512"
        granted = {
            (op, acl["resource"]["type"], acl["resource"]["name"])
            for acl in spec["authorization"]["acls"]
            for op in acl["operations"]
        }
        assert all(a["resource"]["patternType"] == "literal" for a in spec["authorization"]["acls"])
        want = expected(service)
        assert {n for op, t, n in granted if op == "Write" and t == "topic"} == want.writes
        assert {n for op, t, n in granted if op == "Read" and t == "topic"} == want.reads
        assert {n for _, t, n in granted if t == "group"} == {want.group}
        assert {op for op, _, _ in granted} <= {"Read", "Write", "Describe"}
        assert {n for _, t, n in granted if t == "topic"} <= topics


def _secret_refs(pod: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (Secret, key) a pod's containers can read, as variables or files."""
    refs = set()
    for container in pod["spec"]["containers"]:
        # envFrom a Secret would hand over all its keys, the owner's DSN among them
        assert not [e for e in container.get("envFrom", []) if "secretRef" in e], container
        for var in container.get("env", []):
            if ref := var.get("valueFrom", {}).get("secretKeyRef"):
                refs.add((ref["name"], ref["key"]))
    for volume in pod["spec"].get("volumes", []):
        if secret := volume.get("secret"):
            # without items, every key of the Secret becomes a file
            keys = [i["key"] for i in secret.get("items", [])] or ["*"]
            refs |= {(secret["secretName"], k) for k in keys}
    return refs


def test_only_the_migrate_job_reads_the_owner_roles_dsn(objects: list[dict[str, Any]]) -> None:
    migrate_jobs = set()
    for pod in _pods(objects):
        labels = pod["metadata"]["labels"]
        service, role = labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"]
        refs = _secret_refs(pod)
        owners = {(s, k) for s, k in refs if s == "ticketing-migrations" or "MIGRATION" in k}
        if service not in SERVICES:
            assert not owners, service
            continue
        up = service.upper()
        (container,) = pod["spec"]["containers"]
        env = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in container["env"]
            if "secretKeyRef" in e.get("valueFrom", {})
        }
        # every role of the service knows the runtime role: the API and the worker connect as
        # it, the migrations grant to it
        assert env[f"{up}_DATABASE_URL"] == {
            "name": "ticketing-secrets",
            "key": f"{up}_DATABASE_URL",
        }
        if role == "migrate":
            assert env[f"{up}_MIGRATION_DATABASE_URL"] == {
                "name": "ticketing-migrations",
                "key": f"{up}_MIGRATION_DATABASE_URL",
            }
            assert owners == {("ticketing-migrations", f"{up}_MIGRATION_DATABASE_URL")}
            migrate_jobs.add(service)
        else:
            assert not owners, f"{service}-{role} can read an owner's DSN"
    assert migrate_jobs == set(SERVICES)
    # and no database URL sits in the ConfigMap, which every pod reads
    assert "DATABASE_URL" not in (K8S / "config.env").read_text()


def test_every_pod_s_settings_are_accepted_as_they_will_be_in_the_cluster(
    objects: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each pod's process reads at start, production mode included: the ConfigMap
    (config.env), its own env (Secrets stand in with example values), files mounted where
    the manifests mount them. A setting production requires and the manifests forget fails."""
    import importlib
    import os

    config = {
        k: v
        for k, _, v in (
            line.partition("=")
            for line in (K8S / "config.env").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        )
    }
    assert config["APP_ENV"] == "prod"

    def materialized(value: str) -> str:
        # a mounted file: make it, with something its reader accepts
        if not value.startswith("/etc/ticketing/"):
            return value
        path = tmp_path / value.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x" * 64)
        return str(path)

    for pod in _pods(objects):
        service = pod["metadata"]["labels"].get("app.kubernetes.io/name")
        if service not in SERVICES:
            continue
        for container in pod["spec"]["containers"]:
            env = {k: materialized(v) for k, v in config.items()}
            for item in container.get("env", []):
                if "value" in item:
                    env[item["name"]] = materialized(item["value"])
                else:  # from a Secret
                    env[item["name"]] = f"example-{item['name'].lower()}-" + "0" * 64
            for name in list(os.environ):
                if name.isupper() and (
                    name.startswith(("KAFKA_", "JWT_", "APP_"))
                    or name.startswith(f"{service.upper()}_")
                ):
                    monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            settings = importlib.import_module(f"{service}.settings").Settings()
            assert settings.env == "prod"
            assert settings.jwt_issuer and settings.jwt_audience
