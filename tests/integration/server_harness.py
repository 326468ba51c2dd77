"""`iacorch serve` in a subprocess on a free loopback port, for the API and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Served:
    """A running server: its URL, project, environment, and the CLI beside it."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        self.root, self.env = root, env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "serve.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "iacorch", "serve", "--port", str(self.port), *args],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"iacorch serve exited: {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"iacorch serve did not answer: {self.log.read_text()}")

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "iacorch", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=60)

    def token(self, user: str, *extra: str) -> str:
        done = self.cli("token", "create", user, *extra)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def project_env(root: Path, **extra: str) -> dict[str, str]:
    (root / ".git").mkdir(exist_ok=True)
    env = {**os.environ, "IACORCH_HOME": str(root / ".iacorch"), "IACORCH_USER": "admin",
           "PYTHONUNBUFFERED": "1", **extra}
    env.pop("GITHUB_ACTIONS", None)
    return env
