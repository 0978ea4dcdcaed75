"""Test helpers: wait on conditions with deadlines, run service roles as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID, uuid4

import httpx

from ticketing_shared.contracts import EventData
from ticketing_shared.envelope import CloudEvent

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,
    interval: float = 0.05,
    message: str = "condition",
) -> T:
    """Poll ``probe`` until it returns a truthy value; fail with ``message`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        last: T = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {message}; last value: {last!r}"
            )
        await asyncio.sleep(interval)


class ServiceProcess:
    """One role of one service (``python -m <service> api|worker``) as a real OS process."""

    def __init__(
        self,
        service: str,
        role: str,
        *,
        env: dict[str, str],
        port: int,
        log_dir: Path,
        name: str | None = None,
    ) -> None:
        self.service, self.role, self.port = service, role, port
        self.env = {**os.environ, **env}
        self.name = name or f"{service}-{role}"
        self.log_path = log_dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.service, self.role],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 60.0, path: str = "/readyz") -> None:
        async def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                async with httpx.AsyncClient(timeout=2) as c:
                    return (await c.get(self.url + path)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, timeout=timeout, message=f"{self.name} ready")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Send ``sig`` (default SIGKILL) and reap; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def exited(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


async def publish_event(
    producer: Any, event: EventData, subject: str | UUID, *, source: str = "test"
) -> UUID:
    """Publish ``event`` as its owning service would (CloudEvents binary mode, keyed by subject);
    ``producer``: a started ``AIOKafkaProducer``. Returns the event id."""
    ev = CloudEvent(
        id=uuid4(),
        type=event.ce_type,
        source=source,
        subject=str(subject),
        time=datetime.now(UTC),
        data=event.model_dump(mode="json"),
        dataschema=event.dataschema(),
    )
    await producer.send_and_wait(event.topic, value=ev.value(), key=ev.key(), headers=ev.headers())
    return ev.id


def json_refs(node: Any) -> list[str]:
    """Every ``$ref`` in a JSON document (an OpenAPI or AsyncAPI one), depth first."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in json_refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in json_refs(v)]
    return []
