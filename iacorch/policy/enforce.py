"""Applying a verdict to a plan: refuse what policy denies, add the gates it requires.

Policy only adds constraints. A required gate is met by a gate before the stage whose
approvers are all allowed, whose quorum is at least the policy's and which refuses
self-approval unless the policy allows it. A runbook gate that falls short is an error
(the runbook cannot weaken the rule by declaring a weaker gate); a stage with no gate
before it gets one added by the policy, unless the requirement says `declare`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from iacorch.errors import Location, PolicyError, Problem
from iacorch.model.plan import ApprovalGate, Plan, PlannedStage, topological_layers
from iacorch.model.status import StageKind

from .facts import gates_before
from .policy_set import PolicySet
from .verdict import GateRequirement, Verdict

_LISTED = 5   # stage ids named in one message before "and N more"


@dataclass(frozen=True, slots=True)
class RequirementCheck:
    """How one requirement stands against a plan."""

    requirement: GateRequirement
    met_by: Mapping[str, str]               # stage -> a gate before it that satisfies it
    weak: Mapping[str, tuple[str, ...]]     # gate that falls short -> stages it guards
    missing: tuple[str, ...]                # stages with no gate before them at all


def gate_satisfies(gate: ApprovalGate, requirement: GateRequirement) -> bool:
    """Whether a declared gate is at least as strict as the requirement."""
    return (bool(gate.approvers) and set(gate.approvers) <= set(requirement.approvers)
            and gate.require >= requirement.require
            and (requirement.self_approval or not gate.allow_self_approval))


def check_requirement(plan: Plan, requirement: GateRequirement,
                      before: Mapping[str, list[str]]) -> RequirementCheck:
    met: dict[str, str] = {}
    weak: dict[str, list[str]] = {}
    missing: list[str] = []
    for stage_id in requirement.stages:
        stage = plan.stages.get(stage_id)
        if stage is None or stage.approval is not None:
            continue   # a gate, or a `finally` stage (it runs whatever happened)
        candidates = before.get(stage_id, [])
        good = [g for g in candidates
                if gate_satisfies(plan.stages[g].approval, requirement)]  # type: ignore[arg-type]
        if good:
            met[stage_id] = good[-1]
        elif candidates:
            for gate_id in candidates:
                weak.setdefault(gate_id, []).append(stage_id)
        else:
            missing.append(stage_id)
    return RequirementCheck(requirement, met, {g: tuple(s) for g, s in weak.items()},
                            tuple(missing))


def requirement_checks(plan: Plan, verdict: Verdict) -> list[RequirementCheck]:
    before = gates_before(plan)
    return [check_requirement(plan, r, before) for r in verdict.requirements]


def add_required_gates(plan: Plan, verdict: Verdict, policy: PolicySet) -> Plan:
    """The plan with a gate added for each requirement some stages miss (not `declare`)."""
    added: list[dict[str, object]] = []
    for check in requirement_checks(plan, verdict):
        requirement = check.requirement
        if not check.missing or requirement.declare or check.weak:
            continue
        if requirement.name in plan.stages or requirement.name in plan.finally_stages:
            raise PolicyError(f"require_gate `{requirement.name}` would add a gate with the id "
                              f"of a stage of {plan.path}",
                              hint="give the requirement a `name` no runbook uses, e.g. "
                                   f"`policy-{requirement.name}`")
        plan = _with_gate(plan, requirement, check.missing, policy)
        added.append({"name": requirement.name, "approvers": requirement.approvers,
                      "require": requirement.require, "stages": check.missing,
                      "needs": plan.stages[requirement.name].needs})
    if not added:
        return dataclasses.replace(plan, policy_hash=policy.digest)
    text = json.dumps([plan.plan_hash, added], sort_keys=True, default=list)
    return dataclasses.replace(plan, plan_hash=hashlib.sha256(text.encode()).hexdigest(),
                               policy_hash=policy.digest)


def _with_gate(plan: Plan, requirement: GateRequirement, targets: tuple[str, ...],
               policy: PolicySet) -> Plan:
    """Insert one gate before the targets that have no other target upstream.

    The gate needs what those entry targets needed; none of that can be downstream of a
    target (it would not be an entry then), so no cycle appears.
    """
    wanted = set(targets)
    behind_target: dict[str, bool] = {}
    for stage in plan.stages.values():
        behind_target[stage.id] = any(n in wanted or behind_target[n] for n in stage.needs)
    entries = [sid for sid in targets if not behind_target[sid]]
    needs = tuple(dict.fromkeys(n for sid in entries for n in plan.stages[sid].needs))
    gate = PlannedStage(
        id=requirement.name, base_id=requirement.name, kind=StageKind.APPROVAL,
        action_type=None, action={}, needs=needs,
        location=Location(str(policy.directory)),
        approval=ApprovalGate(
            approvers=requirement.approvers, require=requirement.require,
            allow_self_approval=requirement.self_approval,
            message=requirement.message or _describe(requirement, targets)))
    stages = {gate.id: gate}
    for sid, stage in plan.stages.items():
        stages[sid] = dataclasses.replace(stage, needs=(*stage.needs, gate.id)) \
            if sid in entries else stage
    layers = topological_layers({sid: st.needs for sid, st in stages.items()})
    ordered = {sid: stages[sid] for layer in layers for sid in layer}
    expansions = {**plan.expansions, gate.id: (gate.id,)}
    return dataclasses.replace(plan, stages=ordered, layers=layers, expansions=expansions)


def _describe(requirement: GateRequirement, targets: tuple[str, ...]) -> str:
    return (f"policy `{requirement.name}`: {requirement.who} must approve before "
            f"{_listed(targets)}")


def _listed(ids: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:_LISTED])
    return shown + (f" and {len(ids) - _LISTED} more" if len(ids) > _LISTED else "")


def violations(plan: Plan, verdict: Verdict, policy: PolicySet) -> list[Problem]:
    """Everything that makes the plan break the policy, at the runbook lines concerned."""
    hint = (f"required by the organisation's policy in {policy.directory} (set "
            f"{policy.short_digest}); a runbook cannot override it")
    problems = [Problem(f"policy: {denial.message}", _where(plan, denial.stage), hint)
                for denial in verdict.denials]
    for check in requirement_checks(plan, verdict):
        requirement = check.requirement
        for gate_id, guarded in check.weak.items():
            gate = plan.stages[gate_id].approval
            assert gate is not None
            problems.append(Problem(
                f"policy `{requirement.name}`: gate `{gate_id}` guards {_listed(guarded)}, "
                f"which need approval by {requirement.who}; {_shortfall(gate, requirement)}",
                plan.stages[gate_id].location, _gate_hint(requirement)))
        if check.missing and (requirement.declare or check.weak):
            first = check.missing[0]
            problems.append(Problem(
                f"policy `{requirement.name}`: {_listed(check.missing)} must wait behind a gate "
                f"approved by {requirement.who}, and no gate comes before "
                f"{'it' if len(check.missing) == 1 else 'them'}",
                plan.stages[first].location,
                "declare an approval stage they `need`: " + _gate_hint(requirement)))
    return sorted(problems, key=lambda p: (p.location.line, p.location.column)
                  if p.location else (0, 0))


def _where(plan: Plan, stage_id: str | None) -> Location:
    stage = plan.stages.get(stage_id or "") or plan.finally_stages.get(stage_id or "")
    return stage.location if stage is not None else Location(str(plan.path), 1, 1)


def _shortfall(gate: ApprovalGate, requirement: GateRequirement) -> str:
    allowed = set(requirement.approvers)
    if not gate.approvers:
        return "it names no approvers (anyone could approve)"
    outsiders = [a for a in gate.approvers if a not in allowed]
    if outsiders:
        return f"it lets {', '.join(outsiders)} approve"
    if gate.require < requirement.require:
        return f"it has require: {gate.require}"
    return "it allows self-approval"


def _gate_hint(requirement: GateRequirement) -> str:
    return (f"`approvers: [{', '.join(requirement.approvers)}]`, "
            f"`require: {requirement.require}`"
            + ("" if requirement.self_approval else ", `allow_self_approval: false`"))
