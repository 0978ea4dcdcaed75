"""The local stack's supervisor: owns every process of the stack but PostgreSQL.

It starts the components in order, restarts any that exits (with backoff), and after the
memory-only broker came back it re-publishes every service's outbox since the previous broker
instance started (DESIGN §3: the local stack replays automatically after a broker restart).
SIGTERM stops everything it started, in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ticketing_shared.embedded import port_open

from .stack import PATHS, SERVICES, Component, service_env

log = logging.getLogger("supervisor")

# A process that ran this long before it exited was healthy: its restarts start over from quick.
HEALTHY_RUN_S = 30.0
RESTART_DELAY_MAX_S = 15.0


def restart_backoff(exits: int, uptime_s: float) -> tuple[int, float]:
    """After a process exited ``uptime_s`` after its start, given its ``exits`` in a row before:
    its exits in a row now (this one counts as the first if it had run ``HEALTHY_RUN_S``), and
    how long to wait before starting it again.

    The first restart is at once (a killed API is back as fast as it starts); a process that
    keeps exiting soon after its start waits 0.5 s, then twice as long each time, at most 15 s,
    so that one that cannot start does not spin."""
    exits = 1 if uptime_s >= HEALTHY_RUN_S else exits + 1
    if exits == 1:
        return exits, 0.0
    return exits, min(0.5 * 2 ** (exits - 2), RESTART_DELAY_MAX_S)


@dataclass
class Child:
    component: Component
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    next_start: float = 0.0
    exits_in_a_row: int = 0  # since it last ran healthily (restart_backoff)


class Supervisor:
    def __init__(self, components: list[Component]) -> None:
        self.children = [Child(c) for c in components]
        self.env = {**os.environ, **service_env()}
        self.stopping = False

    def _start(self, child: Child) -> None:
        c = child.component
        logfile = open(PATHS.logs / f"{c.name}.log", "ab")  # noqa: SIM115 - owned by the child
        child.proc = subprocess.Popen(
            c.argv,
            env={**self.env, **c.env},
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(PATHS.run),
        )
        logfile.close()
        child.started_at = time.time()
        log.info("started %s pid=%s", c.name, child.proc.pid)
        self._write_state()

    def _write_state(self) -> None:
        state = {
            "supervisor_pid": os.getpid(),
            "children": {
                ch.component.name: {
                    "pid": ch.proc.pid if ch.proc else None,
                    "started_at": ch.started_at,
                    "restarts": ch.restarts,
                    "health_url": ch.component.health_url,
                }
                for ch in self.children
            },
        }
        tmp = PATHS.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(PATHS.state)

    def _wait_broker(self, child: Child, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        port = child.component.health_port
        while port is not None and not port_open(port) and time.monotonic() < deadline:
            time.sleep(0.05)

    def replay_all(self, since_seconds: int) -> None:
        """Re-publish every service's outbox rows created in the last ``since_seconds``."""
        for svc in SERVICES:
            out = subprocess.run(
                [sys.executable, "-m", svc, "outbox", "replay", "--since", f"{since_seconds}s"],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            log.info(
                "replay %s rc=%s %s%s",
                svc,
                out.returncode,
                out.stdout.strip(),
                out.stderr.strip()[-500:],
            )

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        for child in self.children:
            self._start(child)
            if child.component.name == "broker":
                self._wait_broker(child)
        while not self.stopping:
            for child in self.children:
                if self.stopping:
                    break
                self._check(child)
            time.sleep(0.25)
        self._stop_all()

    def _check(self, child: Child) -> None:
        proc = child.proc
        if proc is not None and proc.poll() is None:
            return
        now = time.monotonic()
        if proc is not None:
            log.warning("%s exited with %s", child.component.name, proc.returncode)
            child.proc = None
            child.restarts += 1
            child.exits_in_a_row, delay = restart_backoff(
                child.exits_in_a_row, time.time() - child.started_at
            )
            child.next_start = now + delay
        if now < child.next_start:
            return
        previous_start = child.started_at
        self._start(child)
        if child.component.name == "broker":
            # memory storage: topics, records and offsets are gone; bring them back from the outboxes
            self._wait_broker(child)
            self.replay_all(int(time.time() - previous_start) + 60)

    def _on_signal(self, *_: object) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        for child in reversed(self.children):
            proc = child.proc
            if proc is None or proc.poll() is not None:
                continue
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 20
        for child in self.children:
            proc = child.proc
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        PATHS.state.unlink(missing_ok=True)
        log.info("all stopped")


def main(components: list[Component]) -> None:
    PATHS.logs.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        handlers=[logging.FileHandler(PATHS.logs / "supervisor.log")],
    )
    Path(PATHS.supervisor_pid).write_text(str(os.getpid()))
    try:
        Supervisor(components).run()
    finally:
        PATHS.supervisor_pid.unlink(missing_ok=True)
