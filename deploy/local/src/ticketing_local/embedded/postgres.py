"""A private PostgreSQL cluster in a folder, started with the machine's PostgreSQL binaries.

PostgreSQL refuses to run as root; when we are root the cluster runs as the ``postgres``
system user (created by Debian's package), in a folder that user can reach.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .ports import wait_port


def find_pg_bin() -> Path:
    """The directory of ``pg_ctl``: PG_BIN, else the newest /usr/lib/postgresql/*/bin, else PATH."""
    if env := os.environ.get("PG_BIN"):
        return Path(env)
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise FileNotFoundError(
        "PostgreSQL binaries not found (apt-get install postgresql, or set PG_BIN)"
    )


def _run_user() -> str | None:
    """The user to run PostgreSQL as: ourselves, or ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
    return "postgres"


def _reachable_by(user: str, path: Path) -> bool:
    probe = subprocess.run(
        ["runuser", "-u", user, "--", "test", "-w", str(path)], capture_output=True
    )
    return probe.returncode == 0


class EmbeddedPostgres:
    """initdb (once) + pg_ctl start/stop of a cluster listening on 127.0.0.1:``port``."""

    def __init__(
        self, base_dir: Path, port: int, *, durable: bool = True, log_file: Path | None = None
    ) -> None:
        self.port = port
        self.durable = durable
        self.user = _run_user()
        base_dir.mkdir(parents=True, exist_ok=True)
        self.base_dir = base_dir
        if self.user is not None:
            # the cluster's folder belongs to the user the server runs as, and to nobody else
            # (never world-writable: anyone could replace the data or the socket)
            self._own(base_dir)
            if not _reachable_by(self.user, base_dir):
                # e.g. a checkout inside a 0700 temp folder: keep the cluster where postgres can live
                digest = hashlib.sha1(str(base_dir.resolve()).encode()).hexdigest()[:10]
                self.base_dir = Path(f"/var/tmp/ticketing-pg-{digest}")
                self.base_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._own(self.base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = log_file or (self.base_dir / "postgres.log")
        self.bin = find_pg_bin()

    def _own(self, path: Path) -> None:
        assert self.user is not None
        shutil.chown(path, self.user, self.user)
        os.chmod(path, 0o700)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(a) for a in args]
        if self.user is not None:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return (
            self._cmd(
                str(self.bin / "pg_ctl"), "status", "-D", str(self.data_dir), check=False
            ).returncode
            == 0
        )

    def init(self) -> None:
        if self.initialized():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            shutil.chown(self.data_dir, self.user)
            shutil.chown(self.socket_dir, self.user)
        self._cmd(
            str(self.bin / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-instructions",
        )

    def start(self, timeout: float = 60.0) -> None:
        self.init()
        if self.running():
            wait_port(self.port, timeout=timeout)
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if self.user is not None and not self.log_file.exists():
            self.log_file.touch()
            shutil.chown(self.log_file, self.user)
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.socket_dir}",
            "-c max_connections=400",
            "-c shared_buffers=256MB",
            "-c max_locks_per_transaction=256",
            # when each transaction committed, for pg_xact_commit_timestamp(): the settlement
            # benchmark times the orders side by it (bench/settlement.py)
            "-c track_commit_timestamp=on",
        ]
        if not self.durable:
            # throwaway clusters (tests): durability buys nothing and costs time
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._cmd(
            str(self.bin / "pg_ctl"),
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(int(timeout)),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(opts),
        )
        wait_port(self.port, timeout=timeout)

    def stop(self, mode: str = "fast") -> None:
        if self.running():
            self._cmd(
                str(self.bin / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                mode,
                "-w",
                check=False,
            )

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)
