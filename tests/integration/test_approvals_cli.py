"""Approval gates through the real CLI: CI suspension, identities, quorum, plan binding."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STACK = (Path(__file__).parent / "fixtures" / "terraform" / "label" / "main.tf").read_text()

GATED = """
version: 1
name: gated
on_failure: rollback
vars: {label: {default: blue}}
stages:
  prep:
    kind: provision
    shell: {run: "touch prep.done"}
    rollback: {shell: {run: "rm prep.done"}}
  go:
    kind: approval
    needs: [prep]
    approvers: [alice, bob]
    require: {require}
    message: "switch to {{ vars.label }}?"
  switch:
    kind: deploy
    needs: [go]
    terraform: {dir: stack, vars: {label: "{{ vars.label }}"}}
"""


@pytest.fixture
def gated(project, require_tool):
    require_tool("terraform")
    project.write("stack/main.tf", STACK)

    def make(require: int = 1) -> str:
        project.write("gated.yaml", GATED.replace("{require}", str(require)))
        result = project.run("apply", "gated.yaml", env={"IACORCH_USER": "carol"})
        assert result.code == 3, result.text
        assert "iacorch approve" in result.err
        return project.runs()[0]["id"]

    return make


def state_labels(project) -> list[str]:
    state = json.loads((project.root / "stack/terraform.tfstate").read_text())
    return [r["instances"][0]["attributes"]["input"]["value"] for r in state["resources"]]


def test_ci_suspends_shows_the_plan_and_applies_it_after_approval(project, gated):
    run_id = gated()
    show = project.show(run_id)
    assert show["run"]["status"] == "waiting_approval"
    waiting = project.run("runs", "--waiting")
    assert f"iacorch approve {run_id} go" in waiting.out
    approve = project.run("approve", run_id, "go", "--comment", "lgtm",
                          env={"IACORCH_USER": "alice"})
    assert approve.code == 0, approve.text
    resumed = project.run("resume", run_id)
    assert resumed.code == 0, resumed.text
    assert state_labels(project) == ["blue"]
    audit = project.run("audit", "verify")
    assert audit.code == 0


def test_request_lists_the_terraform_change(project, gated):
    project.write("stack/main.tf", STACK)
    project.write("gated.yaml", GATED.replace("{require}", "1"))
    result = project.run("apply", "gated.yaml", "--json", env={"IACORCH_USER": "carol"})
    assert result.code == 3
    events = [json.loads(line) for line in result.out.splitlines()]
    request = next(e for e in events if e["event"] == "approval_requested")
    assert request["message"] == "switch to blue?"
    assert "+1 ~0 -0" in request["changes"]["switch"]
    assert "terraform_data.record" in request["changes"]["switch"]


def test_identities_quorum_and_self_approval(project, gated):
    run_id = gated(require=2)
    outsider = project.run("approve", run_id, "go", env={"IACORCH_USER": "mallory"})
    assert outsider.code == 77 and "not an approver" in outsider.err
    starter = project.write("gated2.yaml", GATED.replace("{require}", "1").replace(
        "approvers: [alice, bob]", "approvers: [alice, carol]").replace("name: gated",
                                                                       "name: gated2"))
    own = project.run("apply", str(starter), env={"IACORCH_USER": "carol"})
    own_run = project.runs()[0]["id"]
    assert own.code == 3
    refused = project.run("approve", own_run, "go", env={"IACORCH_USER": "carol"})
    assert refused.code == 77 and "started this run" in refused.err
    assert project.run("approve", run_id, "go", env={"IACORCH_USER": "alice"}).code == 0
    twice = project.run("approve", run_id, "go", env={"IACORCH_USER": "alice"})
    assert twice.code == 77 and "already decided" in twice.err
    still = project.run("resume", run_id)
    assert still.code == 3, still.text
    assert project.run("approve", run_id, "go", "--resume",
                       env={"IACORCH_USER": "bob"}).code == 0
    assert state_labels(project) == ["blue"]


def test_an_approval_does_not_carry_to_another_run(project, gated):
    first = gated()
    assert project.run("approve", first, "go", env={"IACORCH_USER": "alice"}).code == 0
    # a second run of the same runbook needs its own approval
    project.run("resume", first)
    second = project.run("apply", "gated.yaml", env={"IACORCH_USER": "carol"})
    assert second.code == 3


def test_reject_fails_the_run_and_rolls_back(project, gated):
    run_id = gated()
    assert (project.root / "prep.done").exists()
    rejected = project.run("reject", run_id, "go", "--comment", "not today", "--resume",
                           env={"IACORCH_USER": "bob"})
    assert rejected.code == 1, rejected.text
    assert f"bob rejected go of run {run_id}" in rejected.out
    assert not (project.root / "prep.done").exists()
    assert project.runs()[0]["status"] == "rolled_back"
    assert not (project.root / "stack/terraform.tfstate").exists() or state_labels(project) == []


def test_stale_saved_plan_is_refused_not_replaced(project, gated):
    run_id = gated()
    assert project.run("approve", run_id, "go", env={"IACORCH_USER": "alice"}).code == 0
    # reality moves between approval and apply: someone applies another label by hand
    stack = project.root / "stack"
    subprocess.run(["terraform", "init", "-input=false"], cwd=stack, check=True,
                   capture_output=True)
    subprocess.run(["terraform", "apply", "-auto-approve", "-input=false", "-var",
                    "label=red"], cwd=stack, check=True, capture_output=True)
    resumed = project.run("resume", run_id)
    assert resumed.code != 0, resumed.text
    assert "no longer matches" in resumed.text
    assert state_labels(project) == ["red"]      # nothing unapproved was applied


GATED_PLAYBOOK = """
version: 1
name: gated-page
secrets:
  token: {env: PAGE_TOKEN}
stages:
  go:
    kind: approval
    approvers: [alice]
    message: "publish the page?"
  publish:
    kind: deploy
    needs: [go]
    ansible:
      playbook: page.yml
      inventory: [localhost]
      extra_vars: {page: "{{ runbook.dir }}/page.txt", token: "{{ secrets.token }}"}
"""

PAGE_PLAYBOOK = """
- name: Publish
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the page
      ansible.builtin.copy: {dest: "{{ page }}", content: "v2 token={{ token }}\\n"}
"""


def test_request_shows_the_ansible_diff(project, require_tool):
    require_tool("ansible-playbook")
    project.write("gated-page.yaml", GATED_PLAYBOOK)
    project.write("page.yml", PAGE_PLAYBOOK)
    page = project.write("page.txt", "v1\n")
    env = {"IACORCH_USER": "carol", "PAGE_TOKEN": "tok-91f3-gate"}
    result = project.run("apply", "gated-page.yaml", "--json", env=env)
    assert result.code == 3, result.text
    events = [json.loads(line) for line in result.out.splitlines()]
    request = next(e for e in events if e["event"] == "approval_requested")
    assert request["changes"]["publish"] == "+0 ~1 -0: update localhost: Write the page"
    assert request["diffs"]["publish"] == (
        f"localhost: Write the page\n--- before: {page}\n+++ after: {page}\n"
        "@@ -1 +1 @@\n-v1\n+v2 token=***\n")
    assert page.read_text() == "v1\n", "the request's plan changed nothing"

    shown = project.run("resume", project.runs()[0]["id"], env=env)
    assert shown.code == 3
    assert "      publish: +0 ~1 -0: update localhost: Write the page" in shown.out
    assert "          +v2 token=***" in shown.out
    assert "tok-91f3-gate" not in result.text + shown.text
    run_id = project.runs()[0]["id"]
    assert project.run("approve", run_id, "go", "--resume",
                       env={**env, "IACORCH_USER": "alice"}).code == 0
    assert page.read_text() == "v2 token=tok-91f3-gate\n"
