"""`iacorch drift` through the real CLI with real Terraform and Ansible: reality changed behind
the tools' backs is found, reported, acknowledged, remediated, and in sync again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SECRET = "drift-tok-8c1f4b"

RUNBOOK = """
version: 1
name: driftcheck
secrets:
  token: {env: DRIFT_TOKEN}
stages:
  net:
    kind: provision
    terraform:
      dir: stacks/fleet
      workspace: eu
      backend_config: {workspace_dir: "{{ runbook.state_dir }}/tfstate"}
      vars: {region: eu, replicas: 2, base_dir: "{{ runbook.dir }}/out"}
  page:
    kind: configure
    ansible:
      playbook: playbooks/page.yml
      inventory: [localhost]
      extra_vars:
        page_file: "{{ runbook.dir }}/out/page.txt"
        region: "{{ stages.net.outputs.region }}"
        token: "{{ secrets.token }}"
"""

PLAYBOOK = """
- name: Render the page
  hosts: all
  gather_facts: false
  tasks:
    - name: Write the page
      ansible.builtin.copy:
        dest: "{{ page_file }}"
        content: "region={{ region }} token={{ token }}\\n"
        mode: "0644"
"""

IGNORE = """
drift:
  ignore:
    - {stage: page, task: "Write the *", reason: "hotfix INC-42", until: 2999-12-31}
"""


def setup_project(project):
    shutil.copytree(REPO / "stacks" / "fleet", project.root / "stacks" / "fleet",
                    ignore=shutil.ignore_patterns(".terraform*", "terraform.tfstate*"))
    project.write("playbooks/page.yml", PLAYBOOK)
    project.write("drift.yaml", RUNBOOK)
    project.env["DRIFT_TOKEN"] = SECRET
    return project


def report_of(result) -> dict:
    events = [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]
    reports = [e for e in events if e["event"] == "drift_report"]
    assert len(reports) == 1, result.text
    return {s["stage"]: s for s in reports[0]["stages"]}


def apply_out_of_band(project, replicas: int) -> None:
    """Someone runs Terraform by hand in the `eu` workspace with other inputs."""
    stack = project.root / "stacks" / "fleet"
    env = {**os.environ, "TF_DATA_DIR": str(project.root / "by-hand"), "TF_IN_AUTOMATION": "1"}
    state = project.root / ".iacorch" / "tfstate"
    for argv in (["init", "-input=false", f"-backend-config=workspace_dir={state}"],
                 ["workspace", "select", "eu"],
                 ["apply", "-auto-approve", "-input=false", "-var", "region=eu",
                  "-var", f"replicas={replicas}", "-var", f"base_dir={project.root / 'out'}"]):
        done = subprocess.run(["terraform", *argv, "-no-color"], cwd=stack, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


def test_drift_found_acknowledged_remediated_and_recorded(project, require_tool) -> None:
    require_tool("terraform")
    require_tool("ansible-playbook")
    setup_project(project)
    page = project.root / "out" / "page.txt"

    never = project.run("drift", "drift.yaml")
    assert never.code == 1 and "never applied" in never.out, never.text

    applied = project.run("apply", "drift.yaml", "-q")
    assert applied.code == 0, applied.text
    assert page.read_text() == f"region=eu token={SECRET}\n"

    # behind Ansible's back
    page.write_text(f"edited by hand, token={SECRET}\n")
    found = project.run("drift", "drift.yaml", "--json", "--report", "drift.xml",
                        "--summary", "drift.md")
    assert found.code == 2, found.text
    stages = report_of(found)
    assert stages["net"]["status"] == "in_sync"
    assert stages["page"]["status"] == "drifted" and stages["page"]["new"] is True
    assert [(f["host"], f["task"]) for f in stages["page"]["findings"]] == [
        ("localhost", "Write the page")]
    assert SECRET not in found.text
    suite = ElementTree.parse(project.root / "drift.xml").getroot()[0]
    assert suite.get("failures") == "1" and suite.get("errors") == "0"
    assert "| page | drifted (new) |" in (project.root / "drift.md").read_text()

    # known and accepted: listed, not alarming
    project.write("drift.yaml", RUNBOOK + IGNORE)
    acknowledged = project.run("drift", "drift.yaml", "--stage", "page", "-q")
    assert acknowledged.code == 0, acknowledged.text
    assert "acknowledged until 2999-12-31: hotfix INC-42" in acknowledged.out
    project.write("drift.yaml", RUNBOOK)

    fixed = project.run("drift", "drift.yaml", "--remediate", "-q")
    assert fixed.code == 0, fixed.text
    assert "remediating page (apply --target)" in fixed.err
    assert page.read_text() == f"region=eu token={SECRET}\n"

    # behind Terraform's back: an apply by hand with other inputs
    apply_out_of_band(project, replicas=3)
    tf = project.run("drift", "drift.yaml", "--stage", "net", "--json", "--remediate")
    assert tf.code == 0, tf.text
    findings = report_of(tf)["net"]["findings"]
    assert {"address": "terraform_data.node[2]", "action": "delete",
            "source": "config"} in findings
    assert "remediating net (apply --target; downstream: page)" in tf.err

    in_sync = project.run("drift", "drift.yaml", "-q")
    assert in_sync.code == 0, in_sync.text
    assert "drift check" in in_sync.out and "2 in sync" in in_sync.out

    rows = json.loads(project.run("runs", "--kind", "drift", "--json").out)
    assert [r["operation"] for r in rows] == ["drift"] * 6
    assert rows[4]["drift"]["drifted"] == ["page"] and rows[0]["drift"]["drifted"] == []
    shown = project.run("show", rows[0]["id"])
    assert "drift history:" in shown.out
    assert any(line.strip().startswith("net") and "last drifted" in line and "in sync since"
               in line for line in shown.out.splitlines()), shown.out


PAGES = """
version: 1
name: pages
secrets:
  token: {env: DRIFT_TOKEN}
stages:
  page:
    kind: configure
    ansible:
      playbook: playbooks/page.yml
      inventory: [localhost]
      extra_vars:
        page_file: "{{ runbook.dir }}/out/page.txt"
        region: eu
        token: "{{ secrets.token }}"
"""

MIGRATION = """
    - name: Run the migration
      ansible.builtin.command: "touch {{ page_file }}.migrated"
      check_mode: false
"""


def test_ansible_diffs_are_shown_and_dry_runs_change_nothing(project, require_tool) -> None:
    require_tool("ansible-playbook")
    project.write("playbooks/page.yml", PLAYBOOK.rstrip() + MIGRATION)
    project.write("pages.yaml", PAGES)
    project.env["DRIFT_TOKEN"] = SECRET
    (project.root / "out").mkdir()
    page, migrated = project.root / "out" / "page.txt", project.root / "out" / "page.txt.migrated"
    assert project.run("apply", "pages.yaml", "-q").code == 0
    assert migrated.exists()
    migrated.unlink()
    page.write_text("".join(f"edited by hand {n}\n" for n in range(40)))

    found = project.run("drift", "pages.yaml")
    assert found.code == 2, found.text
    assert not migrated.exists(), "a task with check_mode: false did not run"
    lines = [line.split(" | ", 1)[-1] for line in found.out.splitlines()]
    task = lines.index("TASK Write the page | localhost | changed")
    assert lines[task + 1:task + 4] == [
        f"    --- before: {page}", f"    +++ after: {page}", "    @@ -1,40 +1 @@"]
    assert lines[task + 31] == "    ... 14 more lines"     # 44 lines of diff, 30 shown
    assert "    +region=eu token=***" not in lines[task:task + 31], "the end is cut"
    assert ("localhost: task `Run the migration` not checkable (it asks for check_mode False; "
            "it ran in check mode)") in found.out
    assert SECRET not in found.text

    run_id = project.runs()[0]["id"]
    logs = project.run("logs", run_id, "page")
    assert "    -edited by hand 0" in logs.out and SECRET not in logs.out

    page.write_text("edited by hand\n")
    events = project.run("drift", "pages.yaml", "--json")
    parsed = [json.loads(line) for line in events.out.splitlines() if line.startswith("{")]
    assert {"event": "stage_log", "line": "    +region=eu token=***"}.items() <= next(
        e for e in parsed if e.get("line") == "    +region=eu token=***").items()
    result = next(e for e in parsed if e["event"] == "stage_progress"
                  and e["progress"].get("status") == "changed")
    assert result["progress"]["diff"].endswith("-edited by hand\n+region=eu token=***\n")
    (finding,) = report_of(events)["page"]["findings"]
    assert finding["diff"].endswith("+region=eu token=***\n")
    assert report_of(events)["page"]["not_checkable"] == [
        {"host": "localhost", "task": "Run the migration", "check_mode": "False"}]

    plan = project.run("plan", "pages.yaml", "-q", "--report", "run.json")
    assert plan.code == 0, plan.text
    assert "page: would change: +0 ~1 -0 (1 task(s) not checkable: check_mode false)" in plan.err
    (diff,) = json.loads((project.root / "run.json").read_text())["stages"][0]["diffs"]
    assert diff["task"] == "Write the page" and diff["diff"].endswith("+region=eu token=***\n")
    assert not migrated.exists() and page.read_text() == "edited by hand\n"
    assert SECRET not in (project.root / "run.json").read_text()


def test_remediation_follows_the_change_downstream(project, require_tool) -> None:
    require_tool("terraform")
    require_tool("ansible-playbook")
    setup_project(project)
    page = project.root / "out" / "page.txt"
    assert project.run("apply", "drift.yaml", "-q").code == 0

    # the code changes: net moves to another region, and page follows net's output
    project.write("drift.yaml", RUNBOOK.replace("vars: {region: eu,", "vars: {region: eu-west,"))
    found = project.run("drift", "drift.yaml", "--json")
    assert found.code == 2, found.text
    stages = report_of(found)
    assert {"address": "output.region", "action": "update", "source": "config"} \
        in stages["net"]["findings"], "the code moved the output, not someone by hand"
    assert stages["page"]["status"] == "in_sync", "judged with the inputs it was applied with"

    fixed = project.run("drift", "drift.yaml", "--remediate", "-q")
    assert fixed.code == 0, fixed.text
    assert "remediating net (apply --target; downstream: page)" in fixed.err
    assert page.read_text() == f"region=eu-west token={SECRET}\n"
    clean = project.run("drift", "drift.yaml", "-q")
    assert clean.code == 0 and "2 in sync" in clean.out, clean.text

    # net alone applied again: page keeps being judged with what it was applied with
    project.write("drift.yaml", RUNBOOK)
    assert project.run("apply", "drift.yaml", "--target", "net", "-q").code == 0
    later = project.run("drift", "drift.yaml", "-q")
    assert later.code == 0 and "2 in sync" in later.out, later.text


def test_a_stage_not_safe_to_dry_run_is_not_checked_and_says_so(project, require_tool) -> None:
    require_tool("terraform")
    # a check of this stack would fail, and it was never applied: nothing may run
    project.write("fragile/main.tf", "this is not HCL\n")
    project.write("fragile.yaml", """
        version: 1
        name: fragile
        stages:
          setup:
            kind: provision
            terraform: {dir: fragile}
            dry_run: false
        """)
    checked = project.run("drift", "fragile.yaml", "--json")
    assert checked.code == 0, checked.text
    setup = report_of(checked)["setup"]
    assert setup["status"] == "skipped"
    assert setup["hint"] == "not safe to dry-run (runbook says so)"
    shown = project.run("drift", "fragile.yaml")
    assert "setup: skipped - not safe to dry-run (runbook says so)" in shown.out, shown.text
