"""`iacorch plan`: a dry run that changes nothing, with honest "known after apply" stages."""

from __future__ import annotations

import subprocess
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


FIXTURES = Path(__file__).parent / "fixtures" / "terraform"
CHAINED = """
version: 1
name: chained
vars: {app: {default: web}}
stages:
  naming:
    kind: provision
    terraform: {dir: naming, vars: {app: "{{ vars.app }}"}}
  service:
    kind: provision
    terraform: {dir: service, vars: {label: "{{ stages.naming.outputs.service }}"}}
"""


def terraform_by_hand(project, stack: str, **values: str) -> int:
    """`terraform plan -detailed-exitcode` run by hand on the state iacorch uses."""
    env = {**project.env, "TF_DATA_DIR": str(project.root / "by-hand" / stack),
           "TF_IN_AUTOMATION": "1"}
    cwd = project.root / stack
    subprocess.run(["terraform", "init", "-input=false"], cwd=cwd, env=env, check=True,
                   capture_output=True)
    argv = ["terraform", "plan", "-input=false", "-lock=false", "-detailed-exitcode"]
    argv += [f"-var={name}={value}" for name, value in values.items()]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True).returncode


def test_plan_agrees_with_terraform_on_output_only_changes_and_their_consumers(
        project, require_tool):
    """A module of only locals and outputs, and a stage fed by its output: `iacorch plan
    --detailed-exitcode` exits as `terraform plan -detailed-exitcode` does on each stack,
    and the consumer is planned with the new output value, not the last applied one."""
    require_tool("terraform")
    project.write("naming/main.tf", (FIXTURES / "naming" / "main.tf").read_text())
    project.write("service/main.tf", STACK)
    project.write("chained.yaml", CHAINED)

    def plan(*flags: str):
        result = project.run("plan", "chained.yaml", "--detailed-exitcode", *flags)
        lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip()
                 for line in result.err.splitlines() if line.startswith(("  naming:",
                                                                         "  service:"))}
        return result, lines

    never_applied, lines = plan()          # nothing applied: both stacks would change
    assert never_applied.code == 2, never_applied.text
    assert terraform_by_hand(project, "naming", app="web") == 2
    assert terraform_by_hand(project, "service", label="svc-web") == 2
    assert lines["naming"] == "would change: +0 ~0 -0, outputs service"
    assert lines["service"].startswith("would change: +1 ~0 -0")  # planned, with svc-web
    assert "plan: 2 would change, 0 not fully planned, 0 no changes" in never_applied.err

    assert project.run("apply", "chained.yaml").code == 0
    unchanged, lines = plan()
    assert unchanged.code == 0, unchanged.text
    assert terraform_by_hand(project, "naming", app="web") == 0
    assert terraform_by_hand(project, "service", label="svc-web") == 0
    assert lines == {"naming": "no changes", "service": "no changes"}

    changed, lines = plan("--var", "app=payments")
    assert changed.code == 2, changed.text
    assert terraform_by_hand(project, "naming", app="payments") == 2
    assert terraform_by_hand(project, "service", label="svc-payments") == 2
    assert lines["naming"] == "would change: +0 ~0 -0, outputs service"
    assert lines["service"].startswith("would change:")   # svc-payments, not svc-web
    assert lines["service"] != "no changes"

    assert project.run("apply", "chained.yaml", "--var", "app=payments").code == 0
    assert (project.root / "service" / "terraform.tfstate").read_text().count("svc-payments")
    after, lines = plan("--var", "app=payments")
    assert after.code == 0, after.text
    assert terraform_by_hand(project, "service", label="svc-payments") == 0


WAITING = """
version: 1
name: waiting
stages:
  produce:
    kind: provision
    shell:
      run: |
        echo '{"network_cidr": "10.0.0.0/16"}' > "$IACORCH_OUTPUT"
  consume:
    kind: configure
    shell: {run: "echo {{ stages.produce.outputs.network_cidr }}"}
"""


def test_stages_that_could_not_be_planned_make_exit_2(project):
    project.write("waiting.yaml", WAITING)
    first = project.run("plan", "waiting.yaml", "--detailed-exitcode")
    assert first.code == 2, first.text        # nothing would change that we know of...
    assert "consume: not fully planned: output `network_cidr` of stage `produce` is known " \
           "only after apply" in first.err    # ...but this one could not be planned
    assert "plan: 0 would change, 1 not fully planned, 0 no changes, 1 would run" in first.err
    assert project.run("apply", "waiting.yaml").code == 0
    again = project.run("plan", "waiting.yaml", "--detailed-exitcode")
    assert again.code == 0, again.text
    assert "plan: 0 would change, 0 not fully planned, 0 no changes, 2 would run" in again.err


def test_a_wrong_output_name_is_an_error_in_plan_and_apply(project, require_tool):
    require_tool("terraform")
    project.write("naming/main.tf", (FIXTURES / "naming" / "main.tf").read_text())
    project.write("service/main.tf", STACK)
    project.write("chained.yaml", CHAINED.replace("outputs.service", "outputs.services"))
    where = "chained.yaml:10:45"
    problem = "stage `naming` has no output `services`"
    expected = f"template error in {where}: {problem}"
    hint = "hint: did you mean `service`? its outputs are: service"
    for command in ("plan", "apply"):
        result = project.run(command, "chained.yaml", "--detailed-exitcode"
                             if command == "plan" else "--quiet")
        assert result.code == 1, result.text
        assert expected in result.err and hint in result.err, result.err
        assert "dict object" not in result.err and "known only after apply" not in result.err
    # the same words as when the runbook declares the stage's outputs and it fails to compile
    project.write("declared.yaml", CHAINED.replace("outputs.service", "outputs.services")
                  .replace("kind: provision\n    terraform: {dir: naming",
                           "kind: provision\n    outputs: [service]\n    terraform: {dir: naming"))
    declared = project.run("validate", "declared.yaml")
    assert f"declared.yaml:11:45: error: {problem}" in declared.text and hint in declared.text

    # a shell stage may write other outputs next time: a plan says it cannot tell, and why
    project.write("waiting.yaml", WAITING)
    assert project.run("apply", "waiting.yaml").code == 0
    project.write("waiting.yaml", WAITING.replace("outputs.network_cidr", "outputs.network_cidrs"))
    planned = project.run("plan", "waiting.yaml", "--detailed-exitcode")
    assert planned.code == 2, planned.text
    assert "its outputs so far: network_cidr, did you mean `network_cidr`?" in planned.err


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
