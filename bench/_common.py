"""Helpers of the benchmarks: the running local stack's addresses, tokens, latency figures, RSS and
CPU time per process."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import statistics
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from ticketing_shared.auth import mint_token

REPO = Path(__file__).resolve().parents[1]
RUN = Path(os.environ.get("TICKETING_RUN_DIR", REPO / "run"))


def port(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def gateway() -> str:
    return f"http://127.0.0.1:{port('GATEWAY_PORT', 8080)}"


def pg_dsn(database: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{port('POSTGRES_PORT', 55432)}/{database}"


@functools.cache
def _signing_key() -> object:
    # parsing (and checking) an RSA key costs far more than a signature: do it once
    pem = (RUN / "keys" / "jwt-private.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


def token(sub: str, **claims: object) -> str:
    return mint_token(_signing_key(), sub=sub, email=f"{sub}@example.test", **claims)  # type: ignore[arg-type]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def latency_line(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"p50 {percentile(ms, 50):.1f} ms  p99 {percentile(ms, 99):.1f} ms  "
        f"max {max(ms):.1f} ms  mean {statistics.fmean(ms):.1f} ms"
    )


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def service_rss() -> dict[str, tuple[float, float]]:
    """RSS of every service process the local stack's supervisor runs."""
    state = json.loads((RUN / "stack.json").read_text())
    out = {}
    for name, child in state["children"].items():
        if child.get("pid"):
            with contextlib.suppress(FileNotFoundError, KeyError, ProcessLookupError):
                out[name] = _rss_mb(child["pid"])
    return out


def print_rss(limit_mb: float | None = None) -> None:
    print("peak RSS per process (current / peak MB):")
    for name, (cur, peak) in sorted(service_rss().items()):
        flag = "" if limit_mb is None or peak <= limit_mb else f"  over {limit_mb:.0f} MB"
        print(f"  {name:<22} {cur:7.1f} / {peak:7.1f}{flag}")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by every service process of the local stack (with its child
    processes: the gateway's nginx workers), and by PostgreSQL (all its processes together)."""
    state = json.loads((RUN / "stack.json").read_text())
    names = {child["pid"]: name for name, child in state["children"].items() if child.get("pid")}
    out = dict.fromkeys(names.values(), 0.0)
    pg = 0.0
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
                pid = int(proc.name)
                if (proc / "comm").read_text().strip() == "postgres":
                    pg += _cpu_s(pid)
                elif pid in names:
                    out[names[pid]] += _cpu_s(pid)
                elif _ppid(pid) in names:
                    out[names[_ppid(pid)]] += _cpu_s(pid)
    out["postgresql (all)"] = pg
    return out


def print_cpu(before: dict[str, float], after: dict[str, float], per: int, what: str) -> None:
    """CPU time each process spent between two snapshots, in total and per unit of work."""
    used = {name: after[name] - before.get(name, 0.0) for name in after}
    total = sum(used.values())
    print(f"CPU time during the timed phase (s, and ms per {what}):")
    for name, s in sorted(used.items(), key=lambda kv: -kv[1]):
        if s > 0:
            print(f"  {name:<22} {s:7.2f}  {s * 1000 / per:7.2f}")
    print(f"  {'all':<22} {total:7.2f}  {total * 1000 / per:7.2f}")


#: the parts that would run on other machines than an api process in a real deployment
WORKERS_AND_BROKER = (
    "orders-worker",
    "payments-worker",
    "refunds-worker",
    "notifications-worker",
    "broker",
)


@contextlib.contextmanager
def paused(names: tuple[str, ...], enabled: bool = True) -> Iterator[None]:
    """SIGSTOP these parts of the local stack for the block, SIGCONT them after (whatever happens):
    their work is deferred, not lost (the outbox and the broker keep it)."""
    children = json.loads((RUN / "stack.json").read_text())["children"] if enabled else {}
    for name in names if enabled else ():
        os.killpg(children[name]["pid"], signal.SIGSTOP)
    try:
        yield
    finally:
        for name in names if enabled else ():
            os.killpg(children[name]["pid"], signal.SIGCONT)
