"""Verbs that act on an existing run rebuild its plan from what the run recorded.

A runbook with a required var: the value given to `apply` is the run's, and no
later verb asks for it again (a suspended disaster-recovery run must be movable).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

REQUIRED = """
version: 1
name: required
on_failure: {on_failure}
vars:
  target: {{required: true}}
  replicas: {{default: 2, type: int}}
stages:
  first:
    kind: provision
    shell: {{run: "echo first {{{{ vars.target }}}} >> trail"}}
    rollback: {{shell: {{run: "echo undo-first {{{{ vars.target }}}} >> trail"}}}}
  flaky:
    kind: configure
    needs: [first]
    shell: {{run: "test -e {{{{ vars.target }}}}.ok"}}
  go:
    kind: approval
    needs: [flaky]
    approvers: [alice]
  last:
    kind: deploy
    needs: [go]
    shell: {{run: "echo last {{{{ vars.target }}}} x{{{{ vars.replicas }}}} >> trail"}}
"""


@pytest.fixture
def required(project):
    def start(*, on_failure: str = "stop", ok: bool = True, code: int = 3) -> str:
        project.write("required.yaml", REQUIRED.format(on_failure=on_failure))
        if ok:
            project.write("db-eu.ok", "")
        applied = project.run("apply", "required.yaml", "--var", "target=db-eu",
                              "--var", "replicas=3")
        assert applied.code == code, applied.text
        return project.runs()[0]["id"]

    return start


def trail(project) -> list[str]:
    return (project.root / "trail").read_text().splitlines()


def test_approve_then_resume_use_the_recorded_vars(project, required):
    run_id = required()
    approved = project.run("approve", run_id, "go", env={"IACORCH_USER": "alice"})
    assert approved.code == 0, approved.text
    resumed = project.run("resume", run_id)
    assert resumed.code == 0, resumed.text
    assert trail(project) == ["first db-eu", "last db-eu x3"]


def test_approve_with_resume(project, required):
    run_id = required()
    done = project.run("approve", run_id, "go", "--resume", env={"IACORCH_USER": "alice"})
    assert done.code == 0, done.text
    assert trail(project)[-1] == "last db-eu x3"


def test_reject(project, required):
    run_id = required()
    rejected = project.run("reject", run_id, "go", env={"IACORCH_USER": "alice"})
    assert rejected.code == 0, rejected.text
    assert project.run("resume", run_id).code == 1
    assert project.show(run_id)["run"]["status"] == "failed"


def test_mark_done_retry_and_rollback(project, required):
    run_id = required(ok=False, code=1)
    marked = project.run("mark-done", run_id, "flaky", "--reason", "checked by hand")
    assert marked.code == 0, marked.text
    retried = project.run("retry", run_id, "--from", "first")
    assert retried.code == 1, retried.text      # flaky runs again and fails again
    rolled = project.run("rollback", run_id)
    assert rolled.code == 1, rolled.text         # rolled back: the run did not succeed
    assert project.show(run_id)["run"]["status"] == "rolled_back"
    assert trail(project) == ["first db-eu", "first db-eu", "undo-first db-eu"]


def test_an_edited_runbook_is_still_refused(project, required):
    run_id = required()
    project.write("required.yaml", REQUIRED.format(on_failure="stop").replace("x{{", "y{{"))
    refused = project.run("resume", run_id)
    assert refused.code == 64
    assert "changed since run" in refused.err and "Traceback" not in refused.err
