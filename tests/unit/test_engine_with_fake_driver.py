"""The engine with a fake driver registered through the `iacorch.drivers` entry points:
the runner, gates, undo and operations run their real code; only the tool is fake.

The fake driver keeps a ledger of every call, so each test asserts what the engine
asked of the tool, in which order, with which rendered inputs.
"""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from iacorch.drivers.base import StageContext
from iacorch.engine.approvals import Decision
from iacorch.engine.operations import decide_gate, plan_of_run
from iacorch.engine.run_state import RunOptions
from iacorch.engine.runs import resume_run, start_run
from iacorch.engine.runtime import Runtime
from iacorch.errors import ApprovalError
from iacorch.model.driver_spec import DefaultUndo, DriverSpec
from iacorch.model.fields import Strict
from iacorch.model.registry import ENTRY_POINT_GROUP, _with_plugins
from iacorch.model.results import ChangeSummary, StageResult
from iacorch.model.status import Choice, Operation, RunStatus, StageStatus
from iacorch.runbook.compiler import compile_runbook
from iacorch.store.memory import MemoryStore

LEDGER: list[tuple[str, str, dict[str, Any]]] = []   # (stage, operation, rendered action)


class FakeAction(Strict):
    value: str = ""
    outcome: Literal["ok", "fail"] = "ok"


class FakeDriver:
    """Answers like a stack tool: plans show one change, applies give `value` back."""

    def required_tools(self, action: Any) -> list[str]:
        return []

    def install_hint(self, tool: str) -> str:
        return ""

    def _answer(self, ctx: StageContext, operation: str) -> StageResult:
        action = dict(ctx.spec.action)
        LEDGER.append((ctx.spec.stage_id, operation, action))
        if action.get("outcome") == "fail" and operation == "apply":
            return StageResult.failure("the fake tool failed")
        changes = ChangeSummary(add=1) if operation == "plan" else None
        return StageResult(StageStatus.SUCCEEDED, outputs={"value": action.get("value", "")},
                           changes=changes, saved_plan=ctx.spec.saved_plan)

    def plan(self, ctx: StageContext) -> StageResult:
        return self._answer(ctx, "plan")

    def apply(self, ctx: StageContext) -> StageResult:
        return self._answer(ctx, "apply" if ctx.spec.saved_plan is None else "apply-saved")

    def destroy(self, ctx: StageContext) -> StageResult:
        return self._answer(ctx, "destroy")

    def drift(self, ctx: StageContext) -> StageResult:
        return self._answer(ctx, "drift")


SPEC = DriverSpec("fake", FakeAction, "iacorch_fake_driver:FakeDriver",
                  example={"value": "x"}, plan_before_gate=True,
                  default_undo=DefaultUndo.STACK)


@dataclass
class EntryPoint:
    name: str = "fake"
    value: str = "iacorch_fake_driver:SPEC"

    def load(self) -> DriverSpec:
        return SPEC


@pytest.fixture(autouse=True)
def fake_driver(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("iacorch_fake_driver")
    module.FakeDriver = FakeDriver  # type: ignore[attr-defined]
    module.SPEC = SPEC  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "iacorch_fake_driver", module)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda *, group: [EntryPoint()] if group == ENTRY_POINT_GROUP else [])
    _with_plugins.cache_clear()
    LEDGER.clear()
    yield
    _with_plugins.cache_clear()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    monkeypatch.setenv("IACORCH_USER", "alice")
    return tmp_path


def compiled(root: Path, text: str, variables: dict[str, Any] | None = None) -> Any:
    path = root / "fake.yaml"
    path.write_text(textwrap.dedent(text).lstrip())
    return compile_runbook(path, cli_vars=variables or {})


def runtime(root: Path) -> Runtime:
    return Runtime(store=MemoryStore(), state_dir=root / ".iacorch", identity="alice")


def calls() -> list[tuple[str, str]]:
    return [(stage, operation) for stage, operation, _ in LEDGER]


def test_outputs_flow_downstream_in_dependency_order(project: Path) -> None:
    plan = compiled(project, """
        version: 1
        name: fake
        vars: {env: {required: true}}
        stages:
          network: {kind: provision, fake: {value: "net-{{ vars.env }}"}}
          cluster:
            kind: provision
            needs: [network]
            fake: {value: "on {{ stages.network.outputs.value }}"}
        """, {"env": "prod"})
    outcome = start_run(plan, runtime(project), RunOptions())
    assert outcome.status is RunStatus.SUCCEEDED
    assert LEDGER == [("network", "apply", {"value": "net-prod"}),
                      ("cluster", "apply", {"value": "on net-prod"})]


def test_a_failure_rolls_back_what_the_run_created_newest_first(project: Path) -> None:
    plan = compiled(project, """
        version: 1
        name: fake
        on_failure: rollback
        stages:
          a: {kind: provision, fake: {value: a}}
          b: {kind: provision, needs: [a], fake: {value: b}}
          c: {kind: deploy, needs: [b], fake: {outcome: fail}}
        """)
    outcome = start_run(plan, runtime(project), RunOptions())
    assert outcome.status is RunStatus.ROLLED_BACK
    # default undo STACK: the failed stage too (its tool may have created part of it)
    assert calls() == [("a", "apply"), ("b", "apply"), ("c", "apply"),
                       ("c", "destroy"), ("b", "destroy"), ("a", "destroy")]


def test_a_gate_shows_the_plan_then_the_approved_plan_is_applied(project: Path) -> None:
    plan = compiled(project, """
        version: 1
        name: fake
        vars: {env: {required: true}}
        stages:
          gate: {kind: approval, approvers: [bob]}
          db: {kind: provision, needs: [gate], fake: {value: "db-{{ vars.env }}"}}
        """, {"env": "prod"})
    rt = runtime(project)
    waiting = start_run(plan, rt, RunOptions())
    assert waiting.status is RunStatus.WAITING_APPROVAL
    assert calls() == [("db", "plan")]                      # shown at the gate, not applied

    run = rt.store.get_run(waiting.run_id)
    with pytest.raises(ApprovalError, match="not an approver"):
        decide_gate(rt.store, run.id, "gate", Decision("mallory", Choice.APPROVE), rt.clock())
    decide_gate(rt.store, run.id, "gate", Decision("bob", Choice.APPROVE), rt.clock())
    resumed = resume_run(plan_of_run(rt.store.get_run(run.id)), rt.store.get_run(run.id), rt)
    assert resumed.status is RunStatus.SUCCEEDED
    assert LEDGER[-1] == ("db", "apply", {"value": "db-prod"})


def test_a_rejected_gate_fails_the_run_and_nothing_is_applied(project: Path) -> None:
    plan = compiled(project, """
        version: 1
        name: fake
        stages:
          gate: {kind: approval, approvers: [bob]}
          db: {kind: provision, needs: [gate], fake: {value: x}}
        """)
    rt = runtime(project)
    run_id = start_run(plan, rt, RunOptions()).run_id
    decide_gate(rt.store, run_id, "gate", Decision("bob", Choice.REJECT, "not today"),
                rt.clock())
    outcome = resume_run(plan_of_run(rt.store.get_run(run_id)), rt.store.get_run(run_id), rt)
    assert outcome.status is RunStatus.FAILED
    assert outcome.statuses["gate"] is StageStatus.FAILED and "db" not in outcome.statuses
    assert "apply" not in {operation for _, operation in calls()}


def test_a_plan_asks_the_tool_to_plan_every_stage(project: Path) -> None:
    plan = compiled(project, """
        version: 1
        name: fake
        stages:
          a: {kind: provision, fake: {value: a}}
          b: {kind: provision, needs: [a], fake: {value: "{{ stages.a.outputs.value }}!"}}
        """)
    outcome = start_run(plan, runtime(project), RunOptions(operation=Operation.PLAN))
    assert outcome.status is RunStatus.SUCCEEDED
    assert LEDGER == [("a", "plan", {"value": "a"}),
                      ("b", "plan", {"value": "a!"})]
