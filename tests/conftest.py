"""Shared test helpers: the real CLI in a subprocess, tools that CI must have, and
throwaway servers (tests/services.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import PostgresCluster


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run the long variants of the reliability and security tests "
                          "(same as IACORCH_LONG_TESTS=1)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers",
                            "long_only: runs only with --long or IACORCH_LONG_TESTS=1")


def find_tool(name: str) -> str:
    """The tool's path; skip when missing locally, fail in CI (IACORCH_REQUIRE_TOOLS=1).

    Looked for as iacorch looks for it: next to this Python first (ansible-playbook
    comes with iacorch's dependencies), then along PATH.
    """
    from iacorch.process import which, with_python_scripts

    found = which(name, {"PATH": with_python_scripts(None)})
    if found:
        return found
    if os.environ.get("IACORCH_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is not on PATH, and IACORCH_REQUIRE_TOOLS=1 (CI) requires it")
    pytest.skip(f"{name} is not on PATH")


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Project:
    """A throwaway project directory with its own state, driven through the real CLI."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / ".git").mkdir(exist_ok=True)  # marks the project root for path checks
        self.env = {**os.environ, "IACORCH_HOME": str(root / ".iacorch"),
                    "IACORCH_USER": "tester", "PYTHONUNBUFFERED": "1"}
        self.env.pop("GITHUB_ACTIONS", None)
        self.env.pop("GITHUB_STEP_SUMMARY", None)

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "iacorch", *args]

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None,
            input: str | None = None) -> CliResult:
        done = subprocess.run(self.argv(*args), cwd=self.root, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout, input=input)
        return CliResult(done.returncode, done.stdout, done.stderr)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start the CLI in its own process group, as a terminal job would be."""
        return subprocess.Popen(self.argv(*args), cwd=self.root,
                                env={**self.env, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def runs(self) -> list[dict]:
        import json

        result = self.run("runs", "--json")
        assert result.code == 0, result.text
        return json.loads(result.out)

    def show(self, run_id: str) -> dict:
        import json

        result = self.run("show", run_id, "--json")
        assert result.code == 0, result.text
        return json.loads(result.out)


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def require_tool():
    """`require_tool("terraform")`: the tool's path, or skip (locally) / fail (in CI)."""
    return find_tool


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL 15 cluster for the whole session."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a fresh, empty schema of the session's cluster (cheaper than a database)."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    postgres_cluster.sql(f"CREATE SCHEMA {schema}")
    return postgres_cluster.url(schema=schema)


class Clock:
    """A clock the test moves by hand (stores and leases take one)."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()
