"""Run operations with a fake executor: the plan of an existing run, and deciding a gate."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iacorch.engine.approvals import Decision
from iacorch.engine.operations import decide_gate, plan_of_run
from iacorch.engine.run_state import RunOptions
from iacorch.engine.runs import resume_run, start_run
from iacorch.engine.runtime import Runtime
from iacorch.errors import ApprovalError, GateConflictError, UsageError
from iacorch.model.status import RunStatus
from iacorch.runbook.compiler import compile_runbook
from iacorch.store.memory import MemoryStore

from .test_executor_seam import RecordingExecutor

GATED = """
version: 1
name: gated
vars:
  target: {required: true}
  replicas: {type: int, default: 2}
stages:
  prep: {kind: provision, shell: {run: "echo {{ vars.target }}"}}
  go: {kind: approval, needs: [prep], approvers: [alice, bob], timeout: 1h}
  ship: {kind: deploy, needs: [go], shell: {run: "echo {{ vars.replicas }}"}}
"""


@pytest.fixture
def waiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run of GATED started with target=db and replicas=3, waiting at `go`."""
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    path = tmp_path / "gated.yaml"
    path.write_text(textwrap.dedent(GATED).lstrip())
    plan = compile_runbook(path, cli_vars={"target": "db", "replicas": "3"})
    clock = iter(range(1_000, 100_000)).__next__
    executor = RecordingExecutor()
    runtime = Runtime(store=MemoryStore(), state_dir=tmp_path / ".iacorch", executor=executor,
                      identity="carol", clock=lambda: float(clock()))
    outcome = start_run(plan, runtime, RunOptions())
    assert outcome.status is RunStatus.WAITING_APPROVAL
    return runtime, outcome.run_id, path


def test_the_plan_of_a_run_comes_from_what_it_recorded(waiting) -> None:
    runtime, run_id, _ = waiting
    run = runtime.store.get_run(run_id)
    plan = plan_of_run(run)                 # no --var: target was required
    assert plan.plan_hash == run.plan_hash
    assert dict(plan.vars) == {"target": "db", "replicas": 3}


def test_an_edited_runbook_is_refused(waiting) -> None:
    runtime, run_id, path = waiting
    path.write_text(path.read_text().replace("echo {{ vars.replicas }}", "echo x"))
    with pytest.raises(UsageError, match="changed since run"):
        plan_of_run(runtime.store.get_run(run_id))


def test_a_decision_follows_the_gate_rules_and_the_run_resumes(waiting) -> None:
    runtime, run_id, _ = waiting
    with pytest.raises(ApprovalError, match="not an approver"):
        decide_gate(runtime.store, run_id, "go", Decision("mallory", "approve"),
                    runtime.clock())
    with pytest.raises(ApprovalError, match="expired"):
        decide_gate(runtime.store, run_id, "go", Decision("alice", "approve"), 1e9)
    decide_gate(runtime.store, run_id, "go", Decision("alice", "approve", via="api token"),
                runtime.clock())
    with pytest.raises(ApprovalError, match="already decided"):
        decide_gate(runtime.store, run_id, "go", Decision("alice", "approve"), runtime.clock())
    [entry] = [e for e in runtime.store.audit_entries() if e.kind == "approval_approve"]
    assert entry.actor == "alice" and entry.data["via"] == "api token"
    run = runtime.store.get_run(run_id)
    outcome = resume_run(plan_of_run(run), run, runtime)
    assert outcome.status is RunStatus.SUCCEEDED
    assert runtime.executor.seen[-1][0] == "ship"  # type: ignore[attr-defined]


def test_a_decision_binds_to_the_gate_hash_shown_and_the_first_decision_wins(waiting) -> None:
    runtime, run_id, _ = waiting
    shown = runtime.store.stage_records(run_id)["go"].details["gate_hash"]
    with pytest.raises(GateConflictError, match="you were shown"):
        decide_gate(runtime.store, run_id, "go",
                    Decision("alice", "approve", seen_gate_hash="f" * 64), runtime.clock())
    decide_gate(runtime.store, run_id, "go", Decision("alice", "reject", seen_gate_hash=shown),
                runtime.clock())
    with pytest.raises(GateConflictError, match="already rejected by alice"):
        decide_gate(runtime.store, run_id, "go", Decision("bob", "approve", seen_gate_hash=shown),
                    runtime.clock())
    assert [a.identity for a in runtime.store.approvals(run_id, "go")] == ["alice"]
