"""Organisation policy: the input facts, the rules' outputs, and how a plan is held to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from iacorch.errors import PolicyError, PolicyViolation
from iacorch.model.status import StageStatus
from iacorch.policy.facts import policy_input
from iacorch.policy.guard import PolicyGuard
from iacorch.policy.policy_set import load_policy_set
from iacorch.policy.testing import run_policy_tests
from iacorch.runbook.compiler import compile_runbook

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"
GROUPS = "groups:\n  sre: [alice, bob, carol]\n"
APPROVERS = "package iacorch\n\napprovers := data.groups\n"
PROD_GATE = """package iacorch

require_gate contains {"name": "sre-gate", "stages": input.workspaces.prod, "group": "sre",
	"require": 2, "declare": DECLARE} if count(input.workspaces.prod) > 0
"""


def _runbook(tmp_path: Path, stages: str, env: str = "prod") -> Path:
    path = tmp_path / "rb.yaml"
    path.write_text(f"version: 1\nname: rb\nvars:\n  env: {{default: {env}}}\nstages:\n{stages}")
    return path


def _policy(tmp_path: Path, *modules: str, data: str = GROUPS) -> PolicyGuard:
    directory = tmp_path / "policy"
    directory.mkdir(exist_ok=True)
    (directory / "groups.yaml").write_text(data)
    (directory / "approvers.rego").write_text(APPROVERS)
    for index, source in enumerate(modules):
        (directory / f"rule{index}.rego").write_text(source)
    return PolicyGuard(load_policy_set(directory))


CHAIN = """  build: {kind: provision, shell: {run: "make"}}
  go:
    kind: approval
    needs: [build]
    approvers: [alice, bob]
    require: 2
    allow_self_approval: false
  deploy: {kind: deploy, needs: [go], shell: {run: "deploy"}}
  smoke: {kind: verify, needs: [deploy], shell: {argv: [curl, -f, "http://x"]}}
"""


def test_facts_give_each_stage_its_neighbours_and_the_gates_before_it(tmp_path):
    plan = compile_runbook(_runbook(tmp_path, CHAIN))
    facts = policy_input(plan, operation="apply", concurrency=3)
    stages = facts["stages"]
    assert stages["deploy"]["upstream"] == ["go"]
    assert stages["build"]["downstream"] == ["go"]
    assert stages["smoke"]["gates_before"] == ["go"]      # transitive: through deploy
    assert stages["build"]["gates_before"] == []
    assert stages["go"]["gate"] == {"approvers": ["alice", "bob"], "require": 2,
                                    "allow_self_approval": False}
    assert "gate" not in stages["deploy"]
    assert stages["deploy"]["workspace"] == "prod"
    assert facts["workspaces"] == {"prod": ["build", "deploy", "smoke"]}   # gates excluded
    assert facts["commands"] == {"build": "make", "deploy": "deploy",
                                 "smoke": "curl -f http://x"}
    assert facts["run"] == {"operation": "apply", "concurrency": 3}


def test_a_literal_stage_workspace_wins_over_the_runbooks(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    plan = compile_runbook(_runbook(tmp_path, """  net:
    kind: provision
    terraform: {dir: stack, workspace: staging}
""", env="prod"))
    net = policy_input(plan)["stages"]["net"]
    assert net["workspace"] == "staging"
    assert net["target"] == "stack"


def test_policy_adds_one_gate_before_the_first_stages_it_covers(tmp_path):
    guard = _policy(tmp_path, PROD_GATE.replace("DECLARE", "false"))
    compiled = compile_runbook(_runbook(tmp_path, """  a: {kind: provision, shell: {run: a}}
  b: {kind: deploy, needs: [a], shell: {run: b}}
  c: {kind: deploy, shell: {run: c}}
"""))
    plan = guard.enforce(compiled)
    gate = plan.stages["sre-gate"]
    assert gate.approval is not None
    assert gate.approval.approvers == ("alice", "bob", "carol")
    assert gate.approval.require == 2 and not gate.approval.allow_self_approval
    assert plan.stages["a"].needs == ("sre-gate",)
    assert plan.stages["c"].needs == ("sre-gate",)
    assert plan.stages["b"].needs == ("a",)              # behind the gate through a
    assert plan.layers[0] == ("sre-gate",)
    assert plan.plan_hash != compiled.plan_hash
    assert plan.policy_hash == guard.digest


def test_a_gate_that_satisfies_the_policy_is_kept_and_nothing_is_added(tmp_path):
    guard = _policy(tmp_path, PROD_GATE.replace("DECLARE", "false"))
    compiled = compile_runbook(_runbook(tmp_path, CHAIN))
    guarded = compile_runbook(_runbook(tmp_path, """  go:
    kind: approval
    approvers: [alice, bob]
    require: 2
    allow_self_approval: false
  deploy: {kind: deploy, needs: [go], shell: {run: deploy}}
"""))
    plan = guard.enforce(guarded)
    assert set(plan.stages) == {"go", "deploy"}
    assert plan.plan_hash == guarded.plan_hash
    # CHAIN's build comes before its gate: the policy's gate goes before build only
    chained = guard.enforce(compiled)
    assert chained.stages["build"].needs == ("sre-gate",)
    assert chained.stages["deploy"].needs == ("go",)


@pytest.mark.parametrize(("gate", "shortfall"), [
    ("approvers: [alice, bob]\n    require: 1\n    allow_self_approval: false",
     "it has require: 1"),
    ("approvers: [alice, mallory]\n    require: 2\n    allow_self_approval: false",
     "it lets mallory approve"),
    ("approvers: [alice, bob]\n    require: 2\n    allow_self_approval: true",
     "it allows self-approval"),
])
def test_a_runbook_gate_weaker_than_the_policy_fails_at_its_line(tmp_path, gate, shortfall):
    guard = _policy(tmp_path, PROD_GATE.replace("DECLARE", "false"))
    compiled = compile_runbook(_runbook(tmp_path, f"""  go:
    kind: approval
    {gate}
  deploy: {{kind: deploy, needs: [go], shell: {{run: deploy}}}}
"""))
    with pytest.raises(PolicyViolation) as caught:
        guard.enforce(compiled)
    problem, = caught.value.problems
    assert problem.location is not None and problem.location.line == 6   # `go:`
    assert "gate `go` guards `deploy`" in problem.message
    assert shortfall in problem.message
    assert "require: 2" in (problem.hint or "")


def test_a_declared_requirement_is_never_added_it_fails_at_the_stage(tmp_path):
    guard = _policy(tmp_path, PROD_GATE.replace("DECLARE", "true"))
    compiled = compile_runbook(_runbook(tmp_path, "  a: {kind: provision, shell: {run: a}}\n"))
    with pytest.raises(PolicyViolation) as caught:
        guard.enforce(compiled)
    problem, = caught.value.problems
    assert problem.location is not None and problem.location.line == 6
    assert "must wait behind a gate approved by 2 of group sre" in problem.message


def test_denials_point_at_the_stage_they_name(tmp_path):
    guard = _policy(tmp_path, """package iacorch

deny contains {"msg": sprintf("no %s here", [id]), "stage": id} if {
	some id, command in input.commands
	contains(command, "rm -rf")
}

deny contains "runbook-wide" if input.run.concurrency > 2
""")
    compiled = compile_runbook(_runbook(tmp_path, """  a: {kind: provision, shell: {run: ok}}
  b: {kind: deploy, shell: {run: "rm -rf /"}}
""", env="dev"))
    with pytest.raises(PolicyViolation) as caught:
        guard.enforce(compiled, concurrency=3)
    where = {p.message: p.location.line if p.location else None
             for p in caught.value.problems}
    assert where == {"policy: runbook-wide": 1, "policy: no b here": 7}
    with pytest.raises(PolicyViolation) as caught:
        guard.enforce(compiled, concurrency=2)
    assert [p.message for p in caught.value.problems] == ["policy: no b here"]


def test_a_policy_that_does_not_parse_fails_closed_with_its_line(tmp_path):
    guard = _policy(tmp_path, "package iacorch\n\ndeny contains msg if {\n  msg := \n}\n")
    compiled = compile_runbook(_runbook(tmp_path, "  a: {kind: provision, shell: {run: a}}\n"))
    with pytest.raises(PolicyError) as caught:
        guard.enforce(compiled)
    assert str(tmp_path / "policy" / "rule0.rego") + ":4:7" in caught.value.message
    assert "does not parse" in caught.value.message


@pytest.mark.parametrize(("module", "words"), [
    ('package iacorch\n\nrequire_gate contains {"name": "g", "stages": [], "group": "ops"}',
     "group `ops`, which `approvers` does not define"),
    ('package iacorch\n\nrequire_gate contains {"name": "g", "stages": [], "group": "sre", '
     '"require": 4}', "needs 4 approvers but only 3 may approve"),
    ('package iacorch\n\nrequire_gate contains {"name": "no spaces", "stages": []}',
     "`name` usable as a stage id"),
    ("package iacorch\n\ndeny contains 42 if true", "a `deny` entry must be a message"),
    ('package iacorch\n\ndeny := "x"', "must be a set"),
])
def test_rule_output_of_the_wrong_shape_is_a_broken_policy(tmp_path, module, words):
    guard = _policy(tmp_path, module)
    compiled = compile_runbook(_runbook(tmp_path, "  a: {kind: provision, shell: {run: a}}\n"))
    with pytest.raises(PolicyError) as caught:
        guard.enforce(compiled)
    assert words in caught.value.message


def test_a_policy_directory_must_hold_a_policy(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy_set(tmp_path / "nowhere")
    (tmp_path / "groups.yaml").write_text("groups: {sre: [a]\n")
    with pytest.raises(PolicyError, match=r"groups.yaml:2:1"):
        load_policy_set(tmp_path)
    (tmp_path / "groups.yaml").write_text(GROUPS)
    with pytest.raises(PolicyError, match="holds no .rego policy"):
        load_policy_set(tmp_path)


def test_the_digest_covers_every_file(tmp_path):
    first = _policy(tmp_path, PROD_GATE.replace("DECLARE", "false")).digest
    (tmp_path / "policy" / "groups.yaml").write_text(GROUPS.replace("carol", "dave"))
    assert load_policy_set(tmp_path / "policy").digest != first


def test_the_executing_side_refuses_a_stage_whose_required_gate_was_not_approved(tmp_path):
    guard = _policy(tmp_path, PROD_GATE.replace("DECLARE", "false"))
    plan = guard.enforce(compile_runbook(_runbook(
        tmp_path, "  a: {kind: provision, shell: {run: a}}\n")), operation="apply")
    refusal = guard.stage_refusal(plan, "a", {}, operation="apply")
    assert refusal == ("policy `sre-gate` requires gate `sre-gate` to be approved in this "
                       "run before this stage")
    assert guard.stage_refusal(plan, "a", {"sre-gate": StageStatus.SUCCEEDED},
                               operation="apply") is None


def test_the_example_policies_refuse_the_requester_at_a_prod_gate(tmp_path):
    guard = PolicyGuard(load_policy_set(EXAMPLES))
    plan = compile_runbook(_runbook(tmp_path, """  go:
    kind: approval
    approvers: [alice, bob]
"""))
    refusal = guard.approval_refusal(plan, "go", identity="alice", requester="alice",
                                     decision="approve")
    assert refusal == "alice started this run and may not approve production gate `go`"
    assert guard.approval_refusal(plan, "go", identity="bob", requester="alice",
                                  decision="approve") is None
    assert guard.approval_refusal(plan, "go", identity="alice", requester="alice",
                                  decision="reject") is None


def test_the_example_policies_pass_their_own_tests():
    outcomes = run_policy_tests(load_policy_set(EXAMPLES))
    assert len(outcomes) >= 7
    assert [o.name for o in outcomes if not o.passed] == []


def test_policy_tests_report_failures_and_errors(tmp_path):
    guard = _policy(tmp_path, """package iacorch_test

test_true if { 1 == 1 }

test_false if { 1 == 2 }
""")
    outcomes = {o.name: o.passed for o in run_policy_tests(guard.policy)}
    assert outcomes == {"iacorch_test.test_true": True, "iacorch_test.test_false": False}
