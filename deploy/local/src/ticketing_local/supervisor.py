"""The local stack's supervisor: owns every process of the stack but PostgreSQL.

It starts the components in order and restarts any that exits (with backoff). SIGTERM stops
everything it started, in reverse order.

The broker keeps its log in memory, so a broker that exits takes every topic, record and
committed offset with it. The supervisor then

* kills the workers at once (their Kafka consumers hold read positions in the lost log; a
  position committed to the next broker would point into different records, or past the end of
  a shorter log, and the group would skip or stall) and starts them again once the broker is
  back, as new consumers that read the new log from its start (the inbox skips what they had);
* marks unpublished, in every service's outbox, every row published since the lost broker
  started: all the log held, replays into it included, since a replayed row's publication time
  is its latest. The relays publish them again. The same happens when the stack starts and the
  broker of the previous run is gone (``run/broker-started`` remembers when it started).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from ticketing_local.embedded import port_open
from ticketing_shared import outbox

from .stack import PATHS, SERVICES, Component, service_env

log = logging.getLogger("supervisor")

# a replay reaches back this far before the lost broker's start (publication times are the
# database's clock, the start the supervisor's: the same machine's, but not the same instant)
REPLAY_MARGIN_S = 5.0

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
        self.broker_ready = False
        # service → replay every outbox row published since (Unix time), until done
        self.replay_due: dict[str, float] = {}
        self.replay_retry_at = 0.0

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
            "replay_due": sorted(self.replay_due),
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

    def queue_replay(self, broker_started: float) -> None:
        """Every service's outbox rows published since ``broker_started`` must go out again."""
        since = broker_started - REPLAY_MARGIN_S
        for svc in SERVICES:
            self.replay_due[svc] = min(since, self.replay_due.get(svc, since))
        self._write_state()

    def replay_pending(self) -> None:
        """Try the replays still due (the database may be away too: they wait for it)."""
        if not self.replay_due or time.monotonic() < self.replay_retry_at:
            return
        for svc, since in list(self.replay_due.items()):
            try:
                count = asyncio.run(self._replay(svc, since))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("replay %s failed, will retry: %r", svc, exc)
                self.replay_retry_at = time.monotonic() + 1.0
                return
            since_text = datetime.fromtimestamp(since, UTC).isoformat()
            log.info("replay %s: %s row(s) published since %s queued again", svc, count, since_text)
            del self.replay_due[svc]
            self._write_state()

    async def _replay(self, svc: str, since: float) -> int:
        conn = await asyncpg.connect(self.env[f"{svc.upper()}_DATABASE_URL"], timeout=5)
        try:
            return await outbox.replay(conn, published_since=datetime.fromtimestamp(since, UTC))
        finally:
            await conn.close(timeout=5)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        if PATHS.broker_started.exists():  # the previous run's broker, and its log, are gone
            self.queue_replay(float(PATHS.broker_started.read_text()))
        for child in self.children:
            self._start(child)
            if child.component.name == "broker":
                self._broker_started(child)
        while not self.stopping:
            for child in self.children:
                if self.stopping:
                    break
                self._check(child)
            self.replay_pending()
            time.sleep(0.25)
        self._stop_all()

    def _broker_started(self, child: Child) -> None:
        self._wait_broker(child)
        tmp = PATHS.broker_started.with_suffix(".tmp")
        tmp.write_text(repr(child.started_at))
        tmp.replace(PATHS.broker_started)
        self.broker_ready = True

    def _broker_lost(self, child: Child) -> None:
        self.broker_ready = False
        for other in self.children:
            proc = other.proc
            if not other.component.broker_bound or proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            other.proc = None  # not its failure: no backoff, started again with the broker
            log.warning("killed %s: the broker it read from is gone", other.component.name)
        self.queue_replay(child.started_at)

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
            if child.component.name == "broker":
                self._broker_lost(child)
        if now < child.next_start or (child.component.broker_bound and not self.broker_ready):
            return
        self._start(child)
        if child.component.name == "broker":
            self._broker_started(child)

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
