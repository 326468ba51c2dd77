"""`iacorch plan`: a dry run that changes nothing, with honest "known after apply" stages."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

STACK = (Path(__file__).parent / "fixtures" / "terraform" / "label" / "main.tf").read_text()

RUNBOOK = """
version: 1
name: planned
vars: {label: {default: blue}}
stages:
  record:
    kind: provision
    terraform: {dir: stack, vars: {label: "{{ vars.label }}"}}
  use:
    kind: configure
    shell: {run: "echo {{ stages.record.outputs.label }} > used"}
"""


def test_plan_changes_nothing_and_reports_what_would(project, require_tool):
    require_tool("terraform")
    project.write("stack/main.tf", STACK)
    project.write("planned.yaml", RUNBOOK)
    before = {p.name for p in project.root.iterdir()}
    first = project.run("plan", "planned.yaml", "--detailed-exitcode")
    assert {p.name for p in project.root.iterdir()} - before <= {".iacorch"}  # writes nothing
    assert first.code == 2, first.text
    assert "record: would change: +1 ~0 -0" in first.err
    assert "use: not fully planned" in first.err        # its input exists only after apply
    assert not (project.root / "used").exists()
    assert not (project.root / "stack/terraform.tfstate").exists()
    assert not list((project.root / ".iacorch").rglob("tfplan"))   # saved plans removed

    assert project.run("apply", "planned.yaml").code == 0
    again = project.run("plan", "planned.yaml", "--detailed-exitcode")
    assert again.code == 0, again.text
    assert "record: no changes" in again.err
    assert "use: would run" in again.err              # last run's outputs stand in
    changed = project.run("plan", "planned.yaml", "--var", "label=red", "--detailed-exitcode")
    assert changed.code == 2
    assert "record: would change: +1 ~0 -1" in changed.err or "~1" in changed.err
    assert (project.root / "used").read_text().strip() == "blue"
    plans = [r for r in project.runs() if r["operation"] == "plan"]
    assert len(plans) == 3


def test_a_stage_not_safe_to_dry_run_is_skipped_and_says_so(project, require_tool):
    require_tool("terraform")
    # a plan of this stack would fail: the test proves that no terraform ran
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
    planned = project.run("plan", "fragile.yaml", "--detailed-exitcode")
    assert planned.code == 0, planned.text
    assert "setup: skipped - not safe to dry-run (runbook says so)" in planned.out
    assert "  setup: not safe to dry-run (runbook says so)" in planned.err
