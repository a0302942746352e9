"""Real Redis and PostgreSQL servers for tests and benchmarks, on 127.0.0.1 only, in a temporary folder.

Debian's ``redis-server`` and ``postgresql`` (15) are used as installed (``.ci/run`` installs them).
PostgreSQL refuses to run as root, so as root its programs run as the ``postgres`` user (runuser).
Nothing is left behind: ``stop()`` ends the server and the folder is the caller's temporary one.

    with redis_server(tmp) as redis, postgres_server() as pg:
        env = {"ECGDX_BROKER_URL": redis.url, "DATABASE_URL": pg.url}
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s")


def redis_available() -> str | None:
    """Why real Redis cannot run here, or None when it can."""
    return None if shutil.which("redis-server") else "redis-server is not installed (apt-get install redis-server)"


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def postgres_available() -> str | None:
    """Why real PostgreSQL cannot run here, or None when it can."""
    if _postgres_bin() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and not shutil.which("runuser"):
        return "PostgreSQL cannot run as root and runuser is missing"
    return None


@dataclass
class RedisServer:
    folder: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        # No persistence: a restart loses every queued message, the worst case the app must survive.
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--protected-mode", "yes"],
            stdout=open(self.folder / "redis.log", "ab"), stderr=subprocess.STDOUT)
        _wait_for_port(self.port, 15, "redis-server", self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def restart(self, down_seconds: float = 0.0) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


@dataclass
class PostgresServer:
    folder: Path
    port: int = field(default_factory=free_port)
    database: str = "ecgdx"
    user: str = "ecgdx"

    @property
    def url(self) -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(_postgres_bin() / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def init(self) -> PostgresServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-U", self.user, "--auth=trust", "-E", "UTF8",
                  "--no-instructions")
        return self

    def start(self) -> PostgresServer:
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "postgres.log"),
                  "-o", options, "-w", "-t", "60", "start")
        _wait_for_port(self.port, 30, "postgres")
        return self

    def create_database(self) -> None:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop", check=False)


@contextlib.contextmanager
def redis_server(folder: Path):
    server = RedisServer(Path(folder) / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def postgres_server():
    """A fresh PostgreSQL cluster with an empty database. Its folder is its own under /tmp (the
    ``postgres`` user cannot enter pytest's root-only folders), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="ecgdx-pg-"))
    server = PostgresServer(folder).init()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
