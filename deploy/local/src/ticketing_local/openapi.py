"""The platform's one OpenAPI document, as the gateway serves it (``/openapi.json``, with Swagger
UI at ``/docs``): the four APIs' documents merged, each operation marked with the service that
answers it (``x-service``).

It is generated, never edited: ``make openapi`` writes ``deploy/gateway/docs/openapi.json`` from
the services' code, and a test fails while the committed file differs from what the code says.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
from importlib import import_module
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[4]
MERGED = REPO / "deploy" / "gateway" / "docs" / "openapi.json"
SERVICES = ("orders", "payments", "refunds", "notifications")
INFO = {
    "title": "Ticketing platform API",
    "version": "1",
    "description": (
        "Event registrations, multi-seat orders, payments (WeChat Pay, Mollie), refunds, "
        "cancellations and e-mail notifications, through one gateway. Every error is an "
        "`application/problem+json` body with a stable `code`; every call but the providers' "
        "webhooks takes a bearer JWT."
    ),
}


class Conflict(ValueError):
    """Two services document one path, or one schema name differently."""


def service_document(service: str) -> dict[str, Any]:
    """``service``'s OpenAPI document, from its code (no process, no database)."""
    app = import_module(f"{service}.api").create_app()
    spec: dict[str, Any] = app.openapi()
    return spec


def _distinct(documents: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The documents with every schema name that two services use for different things
    prefixed by its service's name (``AuditEntry`` → ``OrdersAuditEntry``, ``RefundsAuditEntry``),
    references included; a name they share for one thing stays as it is."""
    seen: dict[str, list[Any]] = {}
    for doc in documents.values():
        for name, schema in doc.get("components", {}).get("schemas", {}).items():
            if schema not in seen.setdefault(name, []):
                seen[name].append(schema)
    clashing = {name for name, variants in seen.items() if len(variants) > 1}
    out = {}
    for service, doc in documents.items():
        text = json.dumps(doc)
        for name in clashing & set(doc.get("components", {}).get("schemas", {})):
            renamed = service.capitalize() + name
            text = text.replace(
                f'"#/components/schemas/{name}"', f'"#/components/schemas/{renamed}"'
            )
            renamed_doc = json.loads(text)
            schemas = renamed_doc["components"]["schemas"]
            schemas[renamed] = schemas.pop(name)
            text = json.dumps(renamed_doc)
        out[service] = json.loads(text)
    return out


def merge(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One document from the services' (by name): their public paths (``/v1/…``, what the
    gateway routes), schemas, security schemes and tags."""
    documents = _distinct(documents)
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    schemes: dict[str, Any] = {}
    tags: set[str] = set()
    for service, doc in documents.items():
        for path, operations in doc.get("paths", {}).items():
            if not path.startswith("/v1/"):
                continue  # health, readiness and metrics are the operators', not routed
            if path in paths:
                raise Conflict(f"{path} is documented by two services")
            paths[path] = {
                method: {**operation, "x-service": service}
                for method, operation in operations.items()
            }
            for operation in operations.values():
                tags.update(operation.get("tags", []))
        components = doc.get("components", {})
        for kind, into in (("schemas", schemas), ("securitySchemes", schemes)):
            for name, schema in components.get(kind, {}).items():
                if into.setdefault(name, schema) != schema:
                    raise Conflict(f"{service} documents {kind} {name} differently")
    return {
        "openapi": next(iter(documents.values()))["openapi"],
        "info": INFO,
        "servers": [{"url": "/", "description": "the gateway"}],
        "tags": [{"name": name} for name in sorted(tags)],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": schemes,
        },
    }


def render() -> str:
    """The merged document as committed: built in a fresh interpreter with only what the apps
    need to be constructed (a throwaway invite secret), so no local setting leaks into it."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "APP_ENV": "test",
        "INVITE_SECRET": secrets.token_hex(32),
    }
    code = (
        "import json; from ticketing_local import openapi as o; "
        "print(json.dumps(o.merge({s: o.service_document(s) for s in o.SERVICES}), "
        "indent=1, ensure_ascii=False))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ticketing_local.openapi", description=__doc__)
    parser.add_argument("--out", type=Path, default=MERGED)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
