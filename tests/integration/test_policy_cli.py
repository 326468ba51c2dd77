"""Organisation policy through the real CLI: validate, graph, plan, apply, approvals."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.server_harness import Served, project_env

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "policies"
DECLARED_GATE = """
package iacorch

approvers := data.groups

require_gate contains {"name": "sre-gate", "stages": input.workspaces.prod, "group": "sre",
	"require": 2, "declare": true} if count(input.workspaces.prod) > 0
"""
PROD = """
version: 1
name: shop
vars: {env: {default: prod}}
stages:
  build:
    kind: provision
    shell: {run: "echo built > build.out"}
  deploy:
    kind: deploy
    needs: [build]
    shell: {run: "echo deployed > deploy.out"}
"""
HAND_GATE = """
version: 1
name: shop
vars: {env: {default: prod}}
stages:
  go:
    kind: approval
    approvers: [alice, bob]
    require: 1
  deploy:
    kind: deploy
    needs: [go]
    shell: {run: "echo deployed > deploy.out"}
"""


@pytest.fixture
def policy_project(project):
    project.env.pop("IACORCH_POLICY_DIR", None)
    shutil.copytree(EXAMPLES, project.root / "policies")
    project.env["IACORCH_POLICY_DIR"] = str(project.root / "policies")
    return project


def test_a_prod_runbook_without_the_required_gate_fails_validate_at_the_stage(project):
    project.env.pop("IACORCH_POLICY_DIR", None)
    project.write("strict/groups.yaml", "groups: {sre: [alice, bob, carol]}\n")
    project.write("strict/gate.rego", DECLARED_GATE)
    project.write("prod.yaml", PROD)
    result = project.run("validate", "prod.yaml", "--policy", "strict")
    assert result.code == 65, result.text
    assert ("prod.yaml:5:3: error: policy `sre-gate`: `build`, `deploy` must wait behind a "
            "gate approved by 2 of group sre") in result.err
    assert "hint: declare an approval stage they `need`" in result.err
    assert project.run("validate", "prod.yaml").code == 0   # no policy: the runbook is fine


def test_a_hand_made_gate_with_too_few_approvers_still_fails(policy_project):
    policy_project.write("shop.yaml", HAND_GATE)
    result = policy_project.run("validate", "shop.yaml")
    assert result.code == 65, result.text
    assert ("shop.yaml:5:3: error: policy `prod-approval`: gate `go` guards `deploy`, which "
            "need approval by 2 of group sre; it has require: 1") in result.err
    applied = policy_project.run("apply", "shop.yaml")
    assert applied.code == 65
    assert not (policy_project.root / "deploy.out").exists()
    fixed = HAND_GATE.replace("require: 1", "require: 2\n    allow_self_approval: false")
    policy_project.write("shop.yaml", fixed)
    assert policy_project.run("validate", "shop.yaml").code == 0


def test_the_policy_added_gate_shows_in_graph_and_plan_and_holds_the_apply(policy_project):
    policy_project.write("prod.yaml", PROD)
    graph = policy_project.run("graph", "prod.yaml", "--format", "json")
    assert graph.code == 0, graph.text
    stages = {s["id"]: s for s in json.loads(graph.out)["stages"]}
    assert stages["prod-approval"]["kind"] == "approval"
    assert stages["build"]["needs"] == ["prod-approval"]
    plan = policy_project.run("plan", "prod.yaml")
    assert plan.code == 0, plan.text
    assert "prod-approval: approval gates are not asked in a plan" in plan.err
    explain = policy_project.run("policy", "explain", "prod.yaml")
    assert ("require_gate prod-approval [added] build, deploy: policy adds gate "
            "`prod-approval` (2 of group sre)") in explain.out

    applied = policy_project.run("apply", "prod.yaml", env={"IACORCH_USER": "alice"})
    assert applied.code == 3, applied.text
    assert not (policy_project.root / "build.out").exists()
    run_id = policy_project.runs()[0]["id"]
    assert policy_project.run("approve", run_id, "prod-approval",
                              env={"IACORCH_USER": "mallory"}).code == 77
    assert policy_project.run("approve", run_id, "prod-approval",
                              env={"IACORCH_USER": "bob"}).code == 0
    done = policy_project.run("approve", run_id, "prod-approval", "--resume",
                              env={"IACORCH_USER": "carol"})
    assert done.code == 0, done.text
    assert (policy_project.root / "deploy.out").exists()
    digest = policy_project.run("validate", "prod.yaml").out.split("policy ")[1][:12]
    events = _audit(policy_project)
    started = next(data for kind, _, data in events if kind == "run_started")
    assert started["policy_hash"].startswith(digest)
    checked = [(stage, data["allowed"]) for kind, stage, data in events
               if kind == "policy_checked"]
    assert checked == [("build", True), ("deploy", True)]
    approvals = [data for kind, _, data in events if kind == "approval_approve"]
    assert all(a["policy_hash"] == started["policy_hash"] for a in approvals)


def test_selecting_stages_cannot_skip_a_policy_gate(policy_project):
    policy_project.write("prod.yaml", PROD)
    result = policy_project.run("apply", "prod.yaml", "--only", "deploy")
    assert result.code == 1, result.text
    assert ("deploy: policy `prod-approval` requires gate `prod-approval` to be approved in "
            "this run before this stage") in result.err
    assert not (policy_project.root / "deploy.out").exists()


def test_the_requester_may_not_approve_a_prod_gate(policy_project):
    # the gate guards nothing (it is last), so only the requester rule applies; the
    # runbook allows self-approval, the policy does not, and the policy wins
    policy_project.write("last.yaml", """
        version: 1
        name: last
        vars: {env: {default: prod}}
        stages:
          sign-off:
            kind: approval
            approvers: [alice, bob]
            allow_self_approval: true
    """)
    assert policy_project.run("apply", "last.yaml", env={"IACORCH_USER": "alice"}).code == 3
    run_id = policy_project.runs()[0]["id"]
    refused = policy_project.run("approve", run_id, "sign-off", env={"IACORCH_USER": "alice"})
    assert refused.code == 77, refused.text
    assert ("the organisation's policy refuses this decision: alice started this run and may "
            "not approve production gate `sign-off`") in refused.err
    assert [kind for kind, _, _ in _audit(policy_project)].count("policy_refused") == 1
    assert policy_project.run("approve", run_id, "sign-off", "--resume",
                              env={"IACORCH_USER": "bob"}).code == 0


def test_a_broken_policy_is_a_clear_error_and_nothing_runs(policy_project):
    policy_project.write("prod.yaml", PROD)
    policy_project.write("policies/broken.rego", "package iacorch\n\ndeny contains x if {\n"
                                                 "  x := \n}\n")
    for command in (("validate", "prod.yaml"), ("apply", "prod.yaml"), ("graph", "prod.yaml")):
        result = policy_project.run(*command)
        assert result.code == 78, result.text
        assert "policies/broken.rego:4:5: policy file broken.rego does not parse" in result.err
        assert "Traceback" not in result.text
    assert not (policy_project.root / "build.out").exists()
    assert policy_project.runs() == []


def test_policy_test_runs_the_policys_own_tests(policy_project):
    result = policy_project.run("policy", "test", "policies")
    assert result.code == 0, result.text
    assert "PASS policy_test.rego: iacorch_test.test_curl_pipe_sh_denied" in result.out
    policy_project.write("policies/wrong_test.rego", """
        package wrong_test

        import data.iacorch

        test_concurrency_of_eight_is_fine if {
          count(iacorch.deny) == 0 with input.commands as {} with input.run as {"concurrency": 8}
        }
    """)
    failing = policy_project.run("policy", "test", "policies")
    assert failing.code == 1
    assert "FAIL wrong_test.rego: wrong_test.test_concurrency_of_eight_is_fine" in failing.out


def test_without_a_policy_nothing_about_policy_is_imported(project):
    project.env.pop("IACORCH_POLICY_DIR", None)
    project.write("prod.yaml", PROD)
    code = ("import sys\nfrom iacorch.cli.main import main\n"
            "try:\n    main(['validate', 'prod.yaml'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules\n"
            "             if m == 'regopy' or m.startswith('iacorch.policy')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=project.root, env=project.env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "['iacorch.policy', 'iacorch.policy.policy_set']"


def _audit(project) -> list[tuple[str, str | None, dict]]:
    with sqlite3.connect(project.root / ".iacorch" / "state.db") as db:
        rows = db.execute("select kind, stage_id, data from audit order by seq").fetchall()
    return [(kind, stage, json.loads(data)) for kind, stage, data in rows]


def test_the_server_holds_runs_and_approvals_to_its_policy(project):
    project.write("prod.yaml", PROD)
    shutil.copytree(EXAMPLES, project.root / "policies")
    env = project_env(project.root)
    env.pop("IACORCH_POLICY_DIR", None)
    served = Served(project.root, env, "--policy", "policies")
    try:
        token = {user: served.token(user) for user in ("alice", "bob", "carol")}
        answer = httpx.post(f"{served.url}/api/runs", json={"runbook": "prod.yaml"},
                            headers={"Authorization": f"Bearer {token['alice']}"})
        assert answer.status_code == 201, answer.text
        run_id = answer.json()["run_id"]
        deadline = time.monotonic() + 20
        while True:
            detail = httpx.get(f"{served.url}/api/runs/{run_id}",
                               headers={"Authorization": f"Bearer {token['bob']}"}).json()
            if detail["run"]["status"] == "waiting_approval":
                break
            assert time.monotonic() < deadline, detail
            time.sleep(0.05)
        gate, = detail["gates"]
        assert gate["id"] == "prod-approval"          # the gate the policy added
        refused = httpx.post(f"{served.url}/api/runs/{run_id}/gates/prod-approval/approve",
                             headers={"Authorization": f"Bearer {token['alice']}"},
                             json={"gate_hash": gate["gate_hash"]})
        assert refused.status_code == 403, refused.text
        assert not (project.root / "build.out").exists()
    finally:
        served.stop()
    broken = project.run("serve", "--policy", str(project.root / "nowhere"))
    assert broken.code == 78, broken.text
