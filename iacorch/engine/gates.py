"""Opening an approval gate: plan what is behind it, bind the request to those plans,
ask on a terminal or suspend, and apply `on_timeout` when nobody answered in time."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from iacorch.errors import ApprovalError
from iacorch.model.events import Event, EventKind
from iacorch.model.plan import PlannedStage
from iacorch.model.registry import driver_spec
from iacorch.model.results import StageResult
from iacorch.model.status import Choice, OnTimeout, Operation
from iacorch.runbook.templating import TemplateProblem

from .approvals import (
    Decision,
    GateDecision,
    OpenGate,
    check_decider,
    evaluate_gate,
    record_decision,
)
from .approved_plans import discard_saved_plans
from .rendering import build_spec, render_action

if TYPE_CHECKING:
    from iacorch.model.masking import Masker
    from iacorch.model.plan import Plan
    from iacorch.runbook.templating import Templates

    from .runtime import Runtime


def _plannable(stage: PlannedStage) -> bool:
    return stage.action_type is not None and driver_spec(stage.action_type).plan_before_gate


class GateVerdict(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    WAITING = "waiting"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class GateRequest:
    """What a person deciding a gate is shown."""

    gate: str
    message: str
    asked_by: str
    approvers: tuple[str, ...]
    require: int
    approved_by: tuple[str, ...]
    changes: Mapping[str, str]            # stage -> "+1 ~0 -0: addr, addr" or why unknown
    inputs: Mapping[str, Mapping[str, Any]]
    diffs: Mapping[str, str] = field(default_factory=dict)   # stage -> what Ansible would change


@dataclass(frozen=True)
class GateAnswer:
    decision: Choice
    inputs: Mapping[str, str] = field(default_factory=dict)
    comment: str | None = None


Prompt = Callable[[GateRequest], "GateAnswer | None"]


@dataclass(frozen=True)
class GateOutcome:
    verdict: GateVerdict
    reason: str
    outputs: Mapping[str, Any] = field(default_factory=dict)


def gate_hash(plan_hash: str, gate_id: str, planned: Mapping[str, Mapping[str, Any]]) -> str:
    """What an approval binds to: the run's plan and the exact saved plans behind the gate."""
    payload = {"plan": plan_hash, "gate": gate_id,
               "stages": {sid: info.get("sha256") or _shown(info)
                          for sid, info in sorted(planned.items())}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class GateContext(Protocol):
    """What a gate needs of the run it stands in (a Runner is one)."""

    plan: Plan
    rt: Runtime
    run_id: str
    masker: Masker
    secrets: Mapping[str, str]
    templates: Templates
    started_by: str
    selected: set[str]

    @property
    def gate_details(self) -> dict[str, dict[str, Any]]:
        """Per gate: its hash, when it opened, the plans it showed."""
        ...

    @property
    def concurrency(self) -> int: ...

    def context_for(self, stage: PlannedStage | None,
                    status: str = "running") -> dict[str, Any]: ...


class GateKeeper:
    """The gate side of a run: it reads the run's state and never changes statuses."""

    def __init__(self, run: GateContext) -> None:
        self.runner = run

    def open(self, stage: PlannedStage) -> GateOutcome:
        r = self.runner
        gate = stage.approval
        assert gate is not None
        details = r.gate_details.get(stage.id)
        opened = details is None
        if details is None:
            planned = self._plan_behind(stage)
            details = {"gate_hash": gate_hash(r.plan.plan_hash, stage.id, planned),
                       "opened_at": r.rt.clock(), "planned": planned,
                       "approvers": list(gate.approvers), "require": gate.require,
                       "message": self._message(stage)}  # as asked, for other front doors
            r.gate_details[stage.id] = details
        bound_to = details["gate_hash"]
        state = evaluate_gate(gate, r.rt.store.approvals(r.run_id, stage.id), bound_to)
        if opened and state.decision is GateDecision.PENDING:
            # before asking: whatever becomes of the prompt, the request is on record
            r.rt.store.append_audit("approval_requested", run_id=r.run_id, stage_id=stage.id,
                                    actor=r.started_by,
                                    data={"gate_hash": bound_to, "approvers": details["approvers"],
                                          "require": gate.require})
        if state.decision is GateDecision.PENDING and r.rt.interactive and r.rt.prompt is not None:
            self._ask(stage, details, state.approved_by)
            state = evaluate_gate(gate, r.rt.store.approvals(r.run_id, stage.id), bound_to)
        saved = {sid: info["saved_plan"] for sid, info in details["planned"].items()
                 if info.get("saved_plan")}
        if state.decision is GateDecision.APPROVED:
            return GateOutcome(GateVerdict.APPROVED,
                               f"approved by {', '.join(state.approved_by)}",
                               dict(state.inputs or {}))
        if state.decision is GateDecision.REJECTED:
            discard_saved_plans(saved)
            return GateOutcome(GateVerdict.REJECTED, f"rejected by {state.rejected_by}")
        if gate.timeout is not None and r.rt.clock() - details["opened_at"] > gate.timeout:
            return self._expired(stage, saved)
        self._announce(stage, details, state.approved_by, state.missing)
        return GateOutcome(GateVerdict.WAITING, "waiting for approval")

    def _expired(self, stage: PlannedStage, saved: Mapping[str, str]) -> GateOutcome:
        r = self.runner
        assert stage.approval is not None
        action = stage.approval.on_timeout
        r.rt.store.append_audit("approval_expired", run_id=r.run_id, stage_id=stage.id,
                                data={"on_timeout": action})
        if action is OnTimeout.APPROVE:
            return GateOutcome(GateVerdict.APPROVED, "approved by its timeout (on_timeout: "
                               "approve)")
        discard_saved_plans(saved)
        if action is OnTimeout.CANCEL:
            return GateOutcome(GateVerdict.CANCELLED, "nobody decided in time (on_timeout: "
                               "cancel); the run stops and can be resumed")
        return GateOutcome(GateVerdict.REJECTED, "nobody decided in time (on_timeout: reject)")

    # -- the plans shown in the request -------------------------------------------------
    def _plan_behind(self, gate_stage: PlannedStage) -> dict[str, dict[str, Any]]:
        """Plan every stage behind the gate whose driver plans before a gate (Terraform,
        Pulumi, Ansible) and whose inputs are known now (Ansible in check mode with diff;
        it keeps no plan: it runs again once approved)."""
        r = self.runner
        behind = [r.plan.stages[sid] for sid in r.plan.stages
                  if sid in r.selected and sid in _descendants(r, gate_stage.id)
                  and _plannable(r.plan.stages[sid])]
        planned: dict[str, dict[str, Any]] = {}
        futures: dict[Future[StageResult], str] = {}
        if not behind:
            return planned
        with r.rt.executor.pool(r.concurrency) as pool:
            for stage in behind:
                assert stage.action_type is not None
                try:
                    rendered = render_action(r.templates, stage.action_type, stage.action,
                                             r.context_for(stage), r.secrets)
                except TemplateProblem as exc:
                    why = "not planned" if exc.after_apply else "template error"
                    planned[stage.id] = {"summary": f"({why}: {exc.message})"}
                    continue
                spec = build_spec(r.plan, stage, stage.action_type, rendered, run_id=r.run_id,
                                  operation=Operation.PLAN, attempt=0,
                                  work_dir=str(r.rt.stage_dir(r.run_id, stage.id)),
                                  state_dir=str(r.rt.state_dir), secrets=r.secrets)
                r.rt.emit(Event(EventKind.STAGE_STARTED, r.run_id, stage.id, {
                    "attempt": 0, "action": str(stage.action_type),
                    "operation": f"plan for gate {gate_stage.id}"}))
                futures[pool.submit(spec, r.masker)] = stage.id
            for future, stage_id in futures.items():
                planned[stage_id] = _plan_info(future.result(), r.masker.mask)
        return planned

    # -- asking -------------------------------------------------------------------------
    def _request(self, stage: PlannedStage, details: Mapping[str, Any],
                 approved_by: tuple[str, ...]) -> GateRequest:
        r = self.runner
        gate = stage.approval
        assert gate is not None
        return GateRequest(
            gate=stage.id, message=self._message(stage), asked_by=r.started_by,
            approvers=gate.approvers, require=gate.require, approved_by=approved_by,
            changes={sid: info.get("summary", "") for sid, info in details["planned"].items()},
            inputs=gate.inputs,
            diffs={sid: info["diff"] for sid, info in details["planned"].items()
                   if info.get("diff")})

    def _message(self, stage: PlannedStage) -> str:
        """The gate's message rendered for this run, secrets masked."""
        r = self.runner
        assert stage.approval is not None
        if not stage.approval.message:
            return ""
        try:
            message = str(r.templates.render(stage.approval.message, r.context_for(stage)))
        except TemplateProblem as exc:
            message = f"(the message could not render: {exc.message})"
        return r.masker.mask(message)

    def _announce(self, stage: PlannedStage, details: Mapping[str, Any],
                  approved_by: tuple[str, ...], missing: int) -> None:
        r = self.runner
        request = self._request(stage, details, approved_by)
        r.rt.emit(Event(EventKind.APPROVAL_REQUESTED, r.run_id, stage.id, {
            "message": request.message, "missing": missing, "approvers": list(request.approvers),
            "require": request.require, "changes": dict(request.changes),
            "diffs": dict(request.diffs), "gate_hash": details["gate_hash"]}))

    def _ask(self, stage: PlannedStage, details: Mapping[str, Any],
             approved_by: tuple[str, ...]) -> None:
        """Ask the person at the terminal, if they may decide this gate."""
        r = self.runner
        gate = stage.approval
        assert gate is not None and r.rt.prompt is not None
        opened = OpenGate(r.run_id, stage.id, gate, details["gate_hash"], details["opened_at"],
                          r.started_by)
        existing = r.rt.store.approvals(r.run_id, stage.id)
        try:
            check_decider(gate, r.rt.identity, r.started_by, existing, details["gate_hash"])
        except ApprovalError as exc:
            r.rt.emit(Event(EventKind.STAGE_LOG, r.run_id, stage.id,
                            {"line": f"cannot approve here: {exc.message}"}))
            return
        answer = r.rt.prompt(self._request(stage, details, approved_by))
        if answer is None:
            return
        record_decision(r.rt.store, opened, Decision(r.rt.identity, answer.decision,
                                                     answer.comment, answer.inputs,
                                                     via="terminal"), r.rt.clock())



def _descendants(run: GateContext, stage_id: str) -> set[str]:
    dependents = run.plan.dependents()
    found: set[str] = set()
    pending = [stage_id]
    while pending:
        for child in dependents.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def _plan_info(result: StageResult, mask: Callable[[str], str]) -> dict[str, Any]:
    if not result.ok:
        return {"summary": f"(plan failed: {mask(result.error or 'unknown error')})"}
    changes, summary = result.changes, "planned"
    if changes is not None:   # an approver sees output changes too: they feed other stages
        items = [f"{c.action} {c.address}" for c in changes.resources[:20]]
        if changes.outputs:
            items.append(f"outputs {', '.join(changes.outputs)}")
        summary = f"{changes.counts}: {', '.join(items)}" if items else changes.counts
    return {"summary": mask(summary), "saved_plan": result.saved_plan,
            "sha256": result.details.get("saved_plan_sha256"),
            "diff": mask(_diff_text(result.details))}


def _diff_text(details: Mapping[str, Any]) -> str:
    """The diffs of the task results that would change (Ansible), each under its host: task."""
    return "".join(f"{c.get('host')}: {c.get('task')}\n{c['diff']}"
                   for c in details.get("changed") or () if c.get("diff"))


def _shown(info: Mapping[str, Any]) -> Any:
    """What an approval binds to for a stage without a saved plan: what the request showed."""
    return [info.get("summary"), info["diff"]] if info.get("diff") else info.get("summary")
