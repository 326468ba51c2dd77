"""Ctrl-C and SIGTERM while Terraform, Ansible or a shell stage is working.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; a CI
cancel sends SIGTERM to iacorch alone. Either way each running child must get
exactly one SIGINT within 200 ms (the child records each one, time-stamped),
nothing new may start, Terraform's state lock must be released, and the run
must end `interrupted` (exit 130 or 143) with a resume hint that works.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

pytestmark = pytest.mark.integration

LATENCY = 0.2

RUNBOOK = """
version: 1
name: sig
stages:
  long:
    kind: provision
    idempotent: true
{action}
  later: {{kind: verify, needs: [long], shell: {{run: "touch later.done"}}}}
"""

ACTIONS = {
    "terraform": """    terraform:
      dir: stack
      vars: {{dir: "{root}"}}""",
    "ansible": """    ansible:
      playbook: playbooks/trap.yml
      inventory: [localhost]
      extra_vars: {{dir: "{root}"}}""",
    "shell": """    shell:
      run: |
        if [ -f ints ]; then exit 0; fi
        trap 'echo $EPOCHREALTIME >> ints; kill $! 2>/dev/null; exit 130' INT
        touch started
        sleep 30 & wait""",
}

HOW = {"ctrl-c": (signal.SIGINT, 130), "sigterm": (signal.SIGTERM, 143)}


@pytest.fixture
def tool_project(project, tree, require_tool, request):
    tool = request.param
    if tool == "terraform":
        require_tool("terraform")
        tree.copy_fixture("trap_stack", "stack")
    elif tool == "ansible":
        require_tool("ansible-playbook")
        tree.copy_fixture("playbooks", "playbooks")
    action = ACTIONS[tool].format(root=project.root)
    project.write("sig.yaml", RUNBOOK.format(action=action))
    return tool


@pytest.mark.parametrize("how", list(HOW))
@pytest.mark.parametrize("tool_project", list(ACTIONS), indirect=True)
def test_one_sigint_reaches_the_child_and_resume_finishes(project, tree, tool_project, how,
                                                         tmp_path):
    sig, expected_code = HOW[how]
    started = tree.start("apply", "sig.yaml")
    tree.wait_for((project.root / "started").exists, timeout=60, what="the long task to start")
    time.sleep(0.2)   # the trap is set right after `started` is touched
    sent_at = time.time()
    if how == "ctrl-c":
        os.killpg(started.proc.pid, sig)    # the terminal's foreground process group
    else:
        os.kill(started.proc.pid, sig)      # iacorch alone
    code = started.wait(timeout=60)
    output = started.output

    received = (project.root / "ints").read_text().split()
    assert len(received) == 1, f"the child got {len(received)} SIGINTs"
    latency = float(received[0]) - sent_at
    print(f"{tool_project} {how}: SIGINT reached the child after {latency * 1000:.0f} ms")
    assert latency < LATENCY, f"the child got its SIGINT {latency:.3f}s after the {how}"
    assert code == expected_code, output
    assert "resume with: iacorch resume" in output
    assert not (project.root / "later.done").exists(), "a new stage started after the signal"
    tree.wait_quiet(timeout=15)                      # no child outlives the run
    run = project.runs()[0]
    assert run["status"] == "interrupted"
    stages = {s["id"]: s for s in project.show(run["id"])["stages"]}
    assert stages["long"]["status"] == "interrupted"
    assert "later" not in stages or stages["later"]["status"] == "pending"
    if tool_project == "terraform":
        tree.assert_unlocked(project.root / "stack", None, tmp_path)

    resumed = project.run("resume", run["id"])
    assert resumed.code == 0, resumed.text
    assert (project.root / "later.done").exists()
    assert len((project.root / "ints").read_text().split()) == 1
    assert project.runs()[0]["status"] == "succeeded"
    assert project.run("audit", "verify").code == 0


PATIENT = """
version: 1
name: patient
stages:
  long:
    kind: provision
    idempotent: true
    shell:
      run: |
        trap 'echo "$EPOCHREALTIME" >> ints' INT
        touch started
        for i in $(seq 30); do sleep 0.1 || true; done
  later: {kind: verify, needs: [long], shell: {run: "touch later.done"}}
"""


def test_a_second_ctrl_c_is_not_forwarded(project, tree):
    """A child that keeps running after its SIGINT still gets only that one when the user
    presses Ctrl-C again: a second SIGINT makes Terraform abandon its state."""
    project.write("patient.yaml", PATIENT)
    started = tree.start("apply", "patient.yaml")
    tree.wait_for((project.root / "started").exists, what="the long task to start")
    time.sleep(0.2)
    os.killpg(started.proc.pid, signal.SIGINT)
    tree.wait_for((project.root / "ints").exists, timeout=5, what="the first SIGINT")
    time.sleep(0.3)
    assert started.proc.poll() is None, "the run ended before the second Ctrl-C"
    os.killpg(started.proc.pid, signal.SIGINT)      # impatient: Ctrl-C again
    code = started.wait(timeout=30)
    assert code == 130, started.output
    assert "still stopping" in started.output
    assert len((project.root / "ints").read_text().split()) == 1, "a second SIGINT went on"
    assert not (project.root / "later.done").exists()
