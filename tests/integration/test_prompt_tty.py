"""On a terminal, a gate asks the person at it: driven through a real pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

from iacorch.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration

GATED = """
version: 1
name: prompted
stages:
  prep: {kind: provision, shell: {run: "true"}}
  go:
    kind: approval
    needs: [prep]
    message: "ship {{ vars.what }}?"
    inputs: {region: {type: choice, choices: [eu, us]}}
  ship:
    kind: deploy
    needs: [go]
    shell: {run: "echo {{ stages.go.outputs.region }} > shipped"}
vars: {what: {default: widgets}}
"""


class Terminal:
    """The CLI on the slave side of a pty, read and answered from the master side."""

    def __init__(self, project, *args: str) -> None:
        self.master, slave = pty.openpty()
        env = {**project.env, "TERM": "dumb", "COLUMNS": "100"}
        self.proc = subprocess.Popen(project.argv(*args), cwd=project.root, env=env,
                                     stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.seen = ""

    def expect(self, text: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"never saw {text!r}; the terminal showed:\n{self.seen}"
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
        assert text in self.seen, self.seen

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def finish(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.2)[0]:
                try:
                    self.seen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        code = self.proc.wait(timeout=5)
        os.close(self.master)
        return code


def test_a_gate_asks_on_the_terminal_and_applies_the_answer(project):
    project.write("prompted.yaml", GATED)
    term = Terminal(project, "apply", "prompted.yaml")
    term.expect("Approval needed at `go`")
    term.expect("ship widgets?")
    term.expect("approve, reject, or leave it waiting?")
    term.send("approve")
    term.expect("region")
    term.send("us")
    term.expect("comment")
    term.send("looks fine")
    assert term.finish() == 0, term.seen
    assert (project.root / "shipped").read_text().strip() == "us"
    audit = project.run("audit", "verify")
    assert audit.code == 0
    show = project.show(project.runs()[0]["id"])
    assert {s["id"]: s["status"] for s in show["stages"]}["go"] == "succeeded"


def test_leaving_it_waiting_suspends_with_exit_3(project):
    project.write("prompted.yaml", GATED)
    term = Terminal(project, "apply", "prompted.yaml")
    term.expect("approve, reject, or leave it waiting?")
    term.send("wait")
    assert term.finish() == 3, term.seen
    assert "iacorch approve" in term.seen
    assert not (project.root / "shipped").exists()


def test_an_identity_that_may_not_approve_is_not_asked(project):
    project.write("prompted.yaml", GATED.replace("message:", "approvers: [alice]\n    message:"))
    term = Terminal(project, "apply", "prompted.yaml")   # IACORCH_USER=tester
    assert term.finish() == 3, term.seen
    assert "cannot approve here" in term.seen and "not an approver" in term.seen
    assert "approve, reject" not in term.seen


def audit_kinds(project, run_id: str) -> list[str]:
    with SqliteStore(Path(project.env["IACORCH_HOME"]) / "state.db") as store:
        return [entry.kind for entry in store.audit_entries(run_id=run_id)]


def test_ctrl_c_at_the_prompt_interrupts_the_run_resumably_and_audits_it(project):
    project.write("prompted.yaml", GATED)
    term = Terminal(project, "apply", "prompted.yaml")
    term.expect("approve, reject, or leave it waiting?")
    os.killpg(term.proc.pid, signal.SIGINT)      # Ctrl-C: the terminal's whole process group
    assert term.finish(timeout=20) == 130, term.seen
    (run,) = project.runs()
    assert run["status"] == "interrupted"
    assert f"resume with: iacorch resume {run['id']}" in term.seen
    kinds = audit_kinds(project, run["id"])
    assert kinds[-3:] == ["approval_requested", "stage_waiting_approval", "run_interrupted"]
    waiting = project.run("runs", "--waiting")
    assert "gate go: waiting" in waiting.out, waiting.text
    resumed = project.run("approve", run["id"], "go", "--input", "region=eu", "--resume")
    assert resumed.code == 0, resumed.text
    assert (project.root / "shipped").read_text().strip() == "eu"
    assert project.run("audit", "verify").code == 0


def test_end_of_input_at_the_prompt_leaves_the_gate_waiting_with_exit_3(project):
    project.write("prompted.yaml", GATED)
    term = Terminal(project, "apply", "prompted.yaml")
    term.expect("approve, reject, or leave it waiting?")
    os.write(term.master, b"\x04")               # Ctrl-D: the input is closed
    assert term.finish(timeout=20) == 3, term.seen
    (run,) = project.runs()
    assert run["status"] == "waiting_approval"
    assert f"iacorch approve {run['id']} go --resume" in term.seen
    assert f"iacorch reject {run['id']} go" in term.seen
    assert audit_kinds(project, run["id"])[-3:] == [
        "approval_requested", "stage_waiting_approval", "run_waiting_approval"]
    waiting = project.run("runs", "--waiting")
    assert "gate go: waiting" in waiting.out, waiting.text
    assert not (project.root / "shipped").exists()
