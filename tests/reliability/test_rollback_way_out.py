"""A failed run never traps what it made: through the CLI, with real Terraform.

The promises: a stage that failed before its tool started is never undone, so it
cannot fail the rollback of the others; `destroy` takes down what a failed run made,
with the runbook as it was or as fixed since; and a `rollback_failed` run always has
a way out that the summary prints: fix the cause and roll back again, or take a stage
off the rollback with `--skip STAGE --reason`, audited.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

pytestmark = pytest.mark.integration

STACK = """
variable "label" {
  type = string
}

resource "terraform_data" "record" {
  input = var.label
}

output "label" {
  value = terraform_data.record.output
}
"""

# `b` has a typo that only rendering finds: `label` is a string, so `.nope` is undefined.
TYPO = """
version: 1
name: typo
on_failure: {policy}
vars: {label: {default: blue}}
stages:
  a:
    kind: provision
    terraform: {dir: stack, vars: {label: "{{ vars.label }}"}}
  b:
    kind: provision
    needs: [a]
    terraform: {dir: stack, workspace: bee, vars: {label: "{{ stages.a.outputs.label.nope }}"}}
"""


@pytest.fixture
def typo(project, require_tool):
    require_tool("terraform")
    project.write("stack/main.tf", STACK)

    def write(policy: str, *, fixed: bool = False) -> None:
        text = TYPO.replace("{policy}", policy)
        project.write("typo.yaml", text.replace(".nope", "") if fixed else text)

    return write


def resources(project) -> int:
    state = json.loads((project.root / "stack/terraform.tfstate").read_text())
    return len(state["resources"])


def test_a_stage_that_failed_while_rendering_is_not_undone(project, typo):
    typo("rollback")
    result = project.run("apply", "typo.yaml")
    assert result.code == 1, result.text          # rolled back, not rollback_failed (4)
    assert "template error" in result.err
    assert "not undone: b (it failed before its tool started: nothing to undo)" in result.err
    assert "undone: a" in result.err
    assert resources(project) == 0
    run = project.runs()[0]
    assert run["status"] == "rolled_back"
    undo = {r["id"]: r["status"] for r in project.show(run["id"])["rollback"]}
    assert undo == {"b": "skipped", "a": "rolled_back"}


@pytest.mark.parametrize("fixed", [False, True], ids=["runbook-as-run", "runbook-fixed"])
def test_destroy_takes_down_what_a_failed_run_made(project, typo, fixed):
    typo("stop")
    assert project.run("apply", "typo.yaml").code == 1
    assert resources(project) == 1          # a's record, made by a run that never succeeded
    typo("stop", fixed=fixed)
    result = project.run("destroy", "typo.yaml")
    assert resources(project) == 0, result.text
    if fixed:   # b renders with the outputs a's run recorded
        assert result.code == 0, result.text
    else:       # b's undo cannot be rendered: said, and it holds nothing back
        assert result.code == 1, result.text
        assert "undo FAILED: b: template error in its undo" in result.err
        assert "run the same `iacorch destroy` again" in result.err


def test_rollback_failed_has_a_way_out_that_the_summary_prints(project):
    project.write("stuck.yaml", """
        version: 1
        name: stuck
        on_failure: rollback
        stages:
          a:
            kind: provision
            shell: {run: "touch a.made"}
            rollback: {shell: {run: "rm a.made"}}
          b:
            kind: configure
            needs: [a]
            shell: {run: "touch b.made"}
            rollback: {shell: {run: "echo the undo of b is broken; exit 3"}}
          verify: {kind: verify, needs: [b], shell: {run: "exit 1"}}
        """)
    first = project.run("apply", "stuck.yaml")
    assert first.code == 4, first.text
    run_id = project.runs()[0]["id"]
    way_out = f'iacorch rollback {run_id} --skip b --reason "what you did"'
    assert f"continue with: iacorch rollback {run_id}" in first.err and way_out in first.err
    again = project.run("rollback", run_id)
    assert again.code == 4 and way_out in again.err
    assert (project.root / "a.made").exists()           # held back by b's failed undo

    unexplained = project.run("rollback", run_id, "--skip", "b")
    assert unexplained.code == 64 and "--skip needs a --reason" in unexplained.err
    untouched = project.run("rollback", run_id, "--skip", "nope", "--reason", "x")
    assert untouched.code == 64 and "did not touch `nope`" in untouched.err

    (project.root / "b.made").unlink()                  # the on-call engineer undoes b
    out = project.run("rollback", run_id, "--skip", "b", "--reason", "removed b.made by hand")
    assert out.code == 1, out.text
    assert "not undone: b (undo skipped by tester: removed b.made by hand)" in out.err
    assert not (project.root / "a.made").exists()
    assert project.runs()[0]["status"] == "rolled_back"
    db = sqlite3.connect(project.root / ".iacorch/state.db")
    skips = db.execute("select actor, stage_id, data from audit "
                       "where kind = 'rollback_stage_skipped'").fetchall()
    db.close()
    assert [(actor, stage, json.loads(data)["reason"]) for actor, stage, data in skips] == [
        ("tester", "b", "removed b.made by hand")]
    assert project.run("audit", "verify").code == 0
