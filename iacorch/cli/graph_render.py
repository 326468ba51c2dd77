"""The stage graph as text layers, mermaid, dot or JSON."""

from __future__ import annotations

import json
from collections.abc import Callable

from iacorch.model.plan import Plan, PlannedStage


def _label(stage: PlannedStage) -> str:
    action = stage.action_type or "gate"
    return f"{stage.id} ({stage.kind.value}: {action})"


def render_text(plan: Plan) -> str:
    lines = [f"{plan.name}: {len(plan.stages)} stages, plan {plan.plan_hash[:12]}"]
    for number, layer in enumerate(plan.layers, 1):
        lines.append(f"layer {number}:")
        for stage_id in layer:
            stage = plan.stages[stage_id]
            after = f"  <- {', '.join(stage.needs)}" if stage.needs else ""
            lines.append(f"  {_label(stage)}{after}")
    if plan.finally_stages:
        lines.append("finally:")
        lines += [f"  {_label(stage)}" for stage in plan.finally_stages.values()]
    return "\n".join(lines)


def _node_id(stage_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in stage_id)


def render_mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    for stage in plan.stages.values():
        shape = ("{{", "}}") if stage.approval else ("[", "]")
        lines.append(f'  {_node_id(stage.id)}{shape[0]}"{_label(stage)}"{shape[1]}')
    for stage in plan.stages.values():
        lines += [f"  {_node_id(need)} --> {_node_id(stage.id)}" for need in stage.needs]
    return "\n".join(lines)


def render_dot(plan: Plan) -> str:
    lines = [f"digraph {json.dumps(plan.name)} {{", "  rankdir=LR;"]
    for stage in plan.stages.values():
        shape = "diamond" if stage.approval else "box"
        lines.append(f"  {json.dumps(stage.id)} [label={json.dumps(_label(stage))}, "
                     f"shape={shape}];")
    for stage in plan.stages.values():
        lines += [f"  {json.dumps(need)} -> {json.dumps(stage.id)};" for need in stage.needs]
    lines.append("}")
    return "\n".join(lines)


def render_json(plan: Plan) -> str:
    def describe(stage: PlannedStage) -> dict[str, object]:
        return {"id": stage.id, "kind": stage.kind.value,
                "action": stage.action_type,
                "needs": list(stage.needs), "location": str(stage.location)}

    return json.dumps({
        "name": plan.name, "plan_hash": plan.plan_hash, "workspace": plan.workspace,
        "layers": [list(layer) for layer in plan.layers],
        "stages": [describe(s) for s in plan.stages.values()],
        "finally": [describe(s) for s in plan.finally_stages.values()],
    }, indent=2)


RENDERERS: dict[str, Callable[[Plan], str]] = {
    "text": render_text, "mermaid": render_mermaid, "dot": render_dot, "json": render_json}
