"""`iacorch policy explain RUNBOOK`: which rule applied where, and what it did."""

from __future__ import annotations

from dataclasses import dataclass

from iacorch.model.plan import Plan

from .enforce import add_required_gates, requirement_checks
from .guard import PolicyGuard


@dataclass(frozen=True, slots=True)
class Explanation:
    rule: str                 # deny | require_gate
    name: str                 # the requirement's name, or the denial's message
    outcome: str              # denied | met | added | weak | missing
    where: str                # stage ids or "runbook"
    detail: str = ""


def explain(guard: PolicyGuard, compiled: Plan, operation: str = "validate") -> list[Explanation]:
    """What the policy says about the compiled runbook, before and after adding gates."""
    verdict = guard.verdict(compiled, operation=operation)
    gated = add_required_gates(compiled, verdict, guard.policy)
    lines: list[Explanation] = []
    for check in requirement_checks(compiled, verdict):
        requirement = check.requirement
        who = requirement.who
        by_gate: dict[str, list[str]] = {}
        for stage_id, gate_id in check.met_by.items():
            by_gate.setdefault(gate_id, []).append(stage_id)
        for gate_id, stages in by_gate.items():
            lines.append(Explanation("require_gate", requirement.name, "met", ", ".join(stages),
                                     f"by the runbook's gate `{gate_id}` ({who})"))
        for gate_id, guarded in check.weak.items():
            lines.append(Explanation("require_gate", requirement.name, "weak",
                                     ", ".join(guarded), f"gate `{gate_id}` falls short of {who}"))
        if check.missing:
            added = requirement.name in gated.stages and requirement.name not in compiled.stages
            if added:
                detail = f"policy adds gate `{requirement.name}` ({who})"
            elif requirement.declare:
                detail = f"the runbook must declare a gate ({who})"
            else:
                detail = "no gate before them; none is added while a runbook gate falls short"
            lines.append(Explanation("require_gate", requirement.name,
                                     "added" if added else "missing", ", ".join(check.missing),
                                     detail))
    final = guard.verdict(gated, operation=operation)
    for denial in final.denials:
        lines.append(Explanation("deny", denial.message, "denied", denial.stage or "runbook"))
    return lines
