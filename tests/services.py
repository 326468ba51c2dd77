"""Throwaway servers for tests: a PostgreSQL 15 cluster and a redis-server.

Each runs from a temp dir on a free loopback port and is stopped (its files removed)
afterwards. initdb refuses root, so as root the cluster belongs to the `postgres`
user and every server command runs through `runuser -u postgres --`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def missing(what: str) -> None:
    """Skip locally, fail in CI (IACORCH_REQUIRE_TOOLS=1): a missing server must show there."""
    if os.environ.get("IACORCH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{what}, and IACORCH_REQUIRE_TOOLS=1 (CI) requires it")
    pytest.skip(what)


class PostgresCluster:
    """A PostgreSQL 15 cluster with trust auth for `postgres` on 127.0.0.1:port."""

    def __init__(self) -> None:
        if not (PG_BIN / "initdb").exists():
            missing(f"PostgreSQL 15 is not installed ({PG_BIN}/initdb)")
        self.root = Path(tempfile.mkdtemp(prefix="iacorch-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin")
            if runuser is None:
                missing("runuser is not installed (needed to run initdb as postgres)")
            self._as = [str(runuser), "-u", "postgres", "--"]
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        self.start()

    def _pg(self, tool: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(PG_BIN / tool), *args], capture_output=True,
                              text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c full_page_writes=off -c max_connections=200")
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", options,
                 "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        options = f"?options=-csearch_path%3D{schema}" if schema else ""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}{options}"

    def sql(self, statement: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(statement)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """redis-server without persistence on 127.0.0.1:port."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server", path="/usr/bin:/usr/local/bin:" +
                              os.environ.get("PATH", ""))
        if binary is None:
            missing("redis-server is not installed")
        self.binary = str(binary)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None
