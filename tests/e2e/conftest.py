"""The `examples` fixture: a copy of the repository's examples in a throwaway project.

Shared by tests/e2e/test_examples.py (the documented commands, checked by their
effects) and tests/e2e/test_examples_transcript.py (docs/examples.md, checked line by
line). The fixture stops the DR lab and anything else started under the project.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COPIED = ("plans", "stacks", "playbooks", "scripts")
SKIPPED = shutil.ignore_patterns(".terraform", "terraform.tfstate.d", "*.tfstate*",
                                 ".terraform.lock.hcl", "__pycache__", "Pulumi.*.yaml")


def processes_under(root: Path) -> list[str]:
    """Live processes whose command line mentions the project directory."""
    listing = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [line.strip() for line in listing.splitlines()
            if str(root) in line and str(os.getpid()) != line.split()[0]]




class Examples:
    """A copy of the examples in a project of their own, driven through the real CLI."""

    def __init__(self, project) -> None:
        self.project = project
        self.root: Path = project.root
        for name in COPIED:
            shutil.copytree(REPO / name, self.root / name, ignore=SKIPPED)
        self.home = self.root / ".iacorch"

    def iacorch(self, *args: str, timeout: float = 300):
        return self.project.run(*args, timeout=timeout)

    def script(self, *argv: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run([str(self.root / argv[0]), *argv[1:]], cwd=self.root,
                              env={**self.project.env, **(env or {})}, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def locks(self) -> list[object]:
        from iacorch.store import open_store

        return list(open_store(str(self.home / "state.db")).list_locks())

    def kill_leftovers(self) -> None:
        """Safety net after a failed test: stop what the examples started under the root."""
        for line in processes_under(self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split()[0]), signal.SIGKILL)

    def assert_nothing_left(self) -> None:
        """No process under the project (after up to 5 s) and no lock held."""
        deadline = time.monotonic() + 5
        while processes_under(self.root) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_under(self.root) == []
        assert self.locks() == []


@pytest.fixture
def examples(project, require_tool):
    require_tool("terraform")
    require_tool("ansible-playbook")
    copy = Examples(project)
    yield copy
    if (copy.home / "dr-lab").exists():
        subprocess.run([str(copy.root / "scripts/dr/lab"), "down"], cwd=copy.root,
                       env=project.env, capture_output=True, timeout=60)
    copy.kill_leftovers()
