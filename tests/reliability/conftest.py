"""Helpers for the reliability suite: the long-variant switch, process-tree watching,
Terraform lock checks and CLI runs whose output goes to a file.

The long variants (more kill points, more race rounds) run with `pytest --long` or
with IACORCH_LONG_TESTS=1 set (the option is registered in tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


def long_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--long", default=False)) or \
        os.environ.get("IACORCH_LONG_TESTS") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if long_enabled(config):
        return
    skip = pytest.mark.skip(reason="long variant: run with --long or IACORCH_LONG_TESTS=1")
    for item in items:
        if "long_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def long_tests(pytestconfig: pytest.Config) -> bool:
    """True when the long variants were asked for."""
    return long_enabled(pytestconfig)


def wait_for(predicate: Callable[[], object], timeout: float = 15.0,
             what: str = "condition", poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def pids_with_env(marker: bytes) -> list[int]:
    """Processes whose environment holds `marker` (NAME=value): a whole process tree,
    including children that left iacorch's process group or session."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def terraform_lock_free(stack: Path, workspace: str | None, scratch: Path) -> None:
    """Assert no one holds the state lock: `terraform plan -lock-timeout=0` succeeds."""
    data_dir = scratch / "tf-check-data"
    env = {**os.environ, "TF_DATA_DIR": str(data_dir), "TF_IN_AUTOMATION": "1",
           "TF_INPUT": "0"}
    env.pop("TF_WORKSPACE", None)
    if not (data_dir / "terraform").exists():
        init = subprocess.run(["terraform", "init", "-input=false", "-no-color"], cwd=stack,
                              env=env, capture_output=True, text=True, timeout=120)
        assert init.returncode == 0, init.stdout + init.stderr
    if workspace:
        env["TF_WORKSPACE"] = workspace
    plan = subprocess.run(["terraform", "plan", "-lock-timeout=0", "-input=false", "-no-color",
                           "-refresh=false"], cwd=stack, env=env, capture_output=True,
                          text=True, timeout=120)
    assert plan.returncode == 0, (f"state of {stack} (workspace {workspace}) is still locked "
                                  f"or broken:\n{plan.stdout}{plan.stderr}")


@dataclass
class Started:
    """A CLI process started in its own process group, its output going to a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    started_at: float

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        os.killpg(self.proc.pid, sig)


class Tree:
    """Starts the real CLI for a `project` and watches every process it leaves behind."""

    def __init__(self, project) -> None:  # tests/conftest.py's Project
        self.project = project
        self.marker = f"IACORCH_HOME={project.env['IACORCH_HOME']}".encode()
        self.count = 0
        self.started: list[Started] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> Started:
        self.count += 1
        log = self.project.root / f"cli-{self.count:02d}.out"
        handle = open(log, "wb")  # noqa: SIM115 - the child owns it until it exits
        proc = subprocess.Popen(self.project.argv(*args), cwd=self.project.root,
                                env={**self.project.env, **(env or {})}, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
        handle.close()
        started = Started(proc, log, time.monotonic())
        self.started.append(started)
        return started

    def alive(self) -> list[int]:
        return pids_with_env(self.marker)

    def wait_quiet(self, timeout: float = 40.0) -> float:
        """Wait until no process of this project is left; the seconds it took."""
        began = time.monotonic()
        wait_for(lambda: not self.alive(), timeout,
                 "every process of the killed run (children, orphan guard) to exit", 0.05)
        return time.monotonic() - began

    wait_for = staticmethod(wait_for)
    assert_unlocked = staticmethod(terraform_lock_free)

    def copy_fixture(self, name: str, destination: str) -> Path:
        """Copy tests/reliability/fixtures/<name> into the project."""
        target = self.project.root / destination
        shutil.copytree(FIXTURES / name, target, dirs_exist_ok=True)
        return target

    def kill_all(self) -> None:
        for pid in self.alive():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tree(project) -> Iterator[Tree]:
    watched = Tree(project)
    yield watched
    for started in watched.started:
        if started.proc.poll() is None:
            started.kill_group()
            started.proc.wait(timeout=10)
    watched.kill_all()  # a failed test must not leave terraform or sleep behind


@pytest.fixture
def terraform(require_tool) -> str:
    return require_tool("terraform")
