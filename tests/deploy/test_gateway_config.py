"""The one gateway config is rendered three ways (the local stack, docker-compose's and
Kubernetes' nginx image with envsubst): each of them must know every placeholder it has, or
nginx would see a literal ``${...}`` (and a missed limit would go unnoticed)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ticketing_local.stack import GATEWAY_LIMITS

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDERS = set(re.findall(r"\$\{([A-Z_]+)\}", (REPO / "deploy/gateway/nginx.conf").read_text()))
# where things are (the APIs, the gateway's port, its documentation's folder), not limits
ADDRESSES = {
    "ORDERS_API",
    "PAYMENTS_API",
    "REFUNDS_API",
    "NOTIFICATIONS_API",
    "GATEWAY_PORT",
    "GATEWAY_DOCS",
}


def _filtered(pattern: str) -> set[str]:
    names = re.fullmatch(r"\^\((.*)\)\$\$?", pattern)
    assert names is not None, pattern
    return set(names.group(1).split("|"))


def test_the_config_has_its_abuse_limits_and_proxy_trust() -> None:
    assert set(GATEWAY_LIMITS) == PLACEHOLDERS - ADDRESSES


def test_compose_and_kubernetes_give_every_placeholder_and_envsubst_only_those() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    env = compose["services"]["gateway"]["environment"]
    assert set(env) >= PLACEHOLDERS
    assert _filtered(env["NGINX_ENVSUBST_FILTER"]) == PLACEHOLDERS
    docs = list(yaml.safe_load_all((REPO / "deploy/k8s/gateway.yaml").read_text()))
    container = next(
        c
        for d in docs
        if d and d.get("kind") == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    )
    k8s_env = {e["name"]: e.get("value") for e in container["env"]}
    assert set(k8s_env) >= PLACEHOLDERS
    assert _filtered(k8s_env["NGINX_ENVSUBST_FILTER"]) == PLACEHOLDERS
