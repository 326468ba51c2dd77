"""Signals and crashes: Ctrl-C, SIGTERM and kill -9 leave a consistent, resumable run."""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.integration

# `trap` counts SIGINTs in the child; `sleep & wait` lets the trap run at once.
TRAPPING = """
version: 1
name: sig
concurrency: 2
stages:
  first: {kind: provision, shell: {run: "echo first >> ledger"}}
  long:
    kind: provision
    needs: [first]
    idempotent: true
    shell:
      run: |
        echo long >> ledger
        trap 'echo int >> ints; exit 130' INT
        touch started
        sleep 5 & wait
  last: {kind: verify, needs: [long], shell: {run: "echo last >> ledger"}}
"""


def wait_for(path, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not appear")


def ledger(project):
    return (project.root / "ledger").read_text().split()


@pytest.mark.parametrize(("how", "code"), [("ctrl-c", 130), ("sigterm", 143)])
def test_interrupt_forwards_one_sigint_and_resume_finishes(project, how, code):
    project.write("sig.yaml", TRAPPING)
    proc = project.start("apply", "sig.yaml")
    wait_for(project.root / "started")
    sent = time.monotonic()
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)   # a terminal sends SIGINT to the whole group
    else:
        os.kill(proc.pid, signal.SIGTERM)    # a CI cancel signals iacorch alone
    wait_for(project.root / "ints", timeout=5)
    assert time.monotonic() - sent < 1.0
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == code, output
    assert (project.root / "ints").read_text().split() == ["int"]   # exactly one SIGINT
    assert "resume with: iacorch resume" in output
    assert ledger(project) == ["first", "long"]                     # nothing new started
    run = project.runs()[0]
    assert run["status"] == "interrupted"
    resumed = project.run("resume", run["id"])
    assert resumed.code == 0, resumed.text
    assert ledger(project) == ["first", "long", "long", "last"]
    assert project.run("audit", "verify").code == 0


def test_kill_9_of_the_process_group_then_resume(project):
    project.write("sig.yaml", TRAPPING)
    proc = project.start("apply", "sig.yaml")
    wait_for(project.root / "started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    run = project.runs()[0]
    assert run["status"] == "died"
    resumed = project.run("resume", run["id"])
    assert resumed.code == 0, resumed.text
    assert ledger(project).count("first") == 1       # finished stages never run again
    assert ledger(project).count("long") == 2        # the interrupted stage runs again
    assert ledger(project)[-1] == "last"
    assert project.runs()[0]["status"] == "succeeded"


def test_non_idempotent_interrupted_stage_needs_confirmation(project):
    project.write("once.yaml", TRAPPING.replace("idempotent: true", "idempotent: false"))
    proc = project.start("apply", "once.yaml")
    wait_for(project.root / "started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    run_id = project.runs()[0]["id"]
    refused = project.run("resume", run_id)
    assert refused.code == 64
    assert "long" in refused.err and "--rerun-interrupted" in refused.err
    assert ledger(project) == ["first", "long"]
    accepted = project.run("resume", run_id, "--rerun-interrupted")
    assert accepted.code == 0, accepted.text
    assert ledger(project) == ["first", "long", "long", "last"]


def test_a_sensitive_output_from_before_a_crash_is_not_replaced_by_a_placeholder(project):
    project.write("sens.yaml", """
        version: 1
        name: sens
        secrets: {token: {env: SENS_TOKEN}}
        stages:
          issue:
            kind: provision
            shell:
              run: |
                echo "{\\"credential\\": \\"$IACORCH_SECRET_TOKEN-x\\"}" >> "$IACORCH_OUTPUT"
          wait:
            kind: configure
            needs: [issue]
            idempotent: true
            shell: {run: "touch started; sleep 5"}
          use:
            kind: deploy
            needs: [wait]
            shell: {env: {CRED: "{{ stages.issue.outputs.credential }}"},
                    run: 'echo "$CRED" > used'}
        """)
    env = {"SENS_TOKEN": "s3cret-canary"}
    proc = project.start("apply", "sens.yaml", env=env)
    wait_for(project.root / "started")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)
    resumed = project.run("resume", project.runs()[0]["id"], env=env)
    assert resumed.code == 1, resumed.text
    assert "`credential` of stage `issue` is sensitive" in resumed.err
    assert "iacorch retry RUN --from issue" in resumed.err
    assert not (project.root / "used").exists()     # never a placeholder passed along
    retried = project.run("retry", project.runs()[0]["id"], "--from", "issue", env=env)
    assert retried.code == 0, retried.text
    assert (project.root / "used").read_text().strip() == "s3cret-canary-x"
