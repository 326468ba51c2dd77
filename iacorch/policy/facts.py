"""The input of a policy: the compiled plan with its graph facts computed once, in Python.

A rule asks "is this prod stage behind a gate?" with a lookup (`s.gates_before`),
not by walking the graph in Rego: a walk per stage is quadratic and costs seconds at
1,000 stages (bench/policy.py measures both).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iacorch.model.plan import Plan, PlannedStage

_TARGET_KEYS = ("dir", "playbook", "url")   # what a terraform/pulumi, ansible, http stage acts on


def policy_input(plan: Plan, *, operation: str = "validate", concurrency: int | None = None,
                 approval: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The `input` document: the runbook, the run asked for, and one fact record per stage.

    `approval` is set when a person decides a gate: {gate, identity, requester, decision}.
    Records stay small (every value costs time to hand to rego-cpp): ids, kind, tool,
    workspace, `target` (dir, playbook or url), the neighbours up- and downstream, the
    gates before it, and a gate's approvers/quorum. Two indexes save rules a scan:
    `workspaces` (workspace -> acting stages) and `commands` (shell stage -> command).
    """
    dependents = plan.dependents()
    gates = gates_before(plan)
    stages: dict[str, Any] = {}
    commands: dict[str, str] = {}
    workspaces: dict[str, list[str]] = {}
    for stage in plan.stages.values():
        stages[stage.id] = _stage_facts(plan, stage, stage.needs, dependents[stage.id],
                                        gates[stage.id])
        if stage.approval is None:
            workspaces.setdefault(stages[stage.id]["workspace"], []).append(stage.id)
    for stage in plan.finally_stages.values():
        stages[stage.id] = _stage_facts(plan, stage, (), [], [])
    for stage in (*plan.stages.values(), *plan.finally_stages.values()):
        command = _command(stage)
        if command is not None:
            commands[stage.id] = command
    return {
        "runbook": {"name": plan.name, "path": str(plan.path), "workspace": plan.workspace,
                    "on_failure": str(plan.on_failure), "concurrency": plan.concurrency},
        "run": {"operation": operation, "concurrency": concurrency or plan.concurrency},
        "stages": stages,
        "workspaces": workspaces,   # workspace -> the stages that act in it (no gates, finally)
        "commands": commands,       # stage -> its shell command line
        "approval": dict(approval) if approval is not None else None,
    }


def _command(stage: PlannedStage) -> str | None:
    """A shell stage's command line (`run`, or `argv` joined), unrendered."""
    action = stage.action if isinstance(stage.action, Mapping) else {}
    if isinstance(action.get("run"), str):
        return str(action["run"])
    if isinstance(action.get("argv"), list):
        return " ".join(str(part) for part in action["argv"])
    return None


def _stage_facts(plan: Plan, stage: PlannedStage, upstream: tuple[str, ...] | list[str],
                 downstream: list[str], gates: list[str]) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "id": stage.id, "kind": str(stage.kind), "tool": stage.action_type,
        "workspace": stage_workspace(plan, stage), "upstream": list(upstream),
        "downstream": downstream, "gates_before": gates}
    action = stage.action if isinstance(stage.action, Mapping) else {}
    target = next((action[k] for k in _TARGET_KEYS if isinstance(action.get(k), str)), None)
    if target is not None:
        facts["target"] = target
    if stage.approval is not None:
        facts["gate"] = {"approvers": list(stage.approval.approvers),
                         "require": stage.approval.require,
                         "allow_self_approval": stage.approval.allow_self_approval}
    return facts


def stage_workspace(plan: Plan, stage: PlannedStage) -> str:
    """The stage's own literal `workspace:` (terraform), else the runbook's workspace.

    A templated stage workspace renders only at run time; the runbook's `workspace`
    (by default `vars.env`) is what it almost always follows.
    """
    own = stage.action.get("workspace") if isinstance(stage.action, Mapping) else None
    if isinstance(own, str) and own and "{" not in own:
        return own
    return plan.workspace


def gates_before(plan: Plan) -> dict[str, list[str]]:
    """Stage id -> the approval gates it waits for, directly or through other stages.

    One pass in topological order (plan.stages is one): each stage inherits the gates of
    what it needs, so the whole map costs the number of edges times the number of gates.
    """
    found: dict[str, list[str]] = {}
    for stage in plan.stages.values():
        gates: dict[str, None] = {}
        for need in stage.needs:
            gates.update(dict.fromkeys(found[need]))
            if plan.stages[need].approval is not None:
                gates[need] = None
        found[stage.id] = list(gates)
    return found
