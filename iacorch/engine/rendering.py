"""From a planned stage and what is known so far to a rendered, runnable StageSpec."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from iacorch.model.plan import Plan, PlannedStage
from iacorch.model.registry import driver_spec
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.runbook.templating import (
    StageOutputs,
    TemplateProblem,
    Templates,
    secret_env_name,
    shell_secret,
    to_text,
)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    status: str
    state_dir: str
    previous: Mapping[str, Any] | None = None


PendingOutputs = Callable[[str, StageStatus], frozenset[str] | None]


def settled_outputs(_stage_id: str, status: StageStatus) -> frozenset[str] | None:
    """A stage that has finished has all its outputs; one that has not may have any."""
    return frozenset() if status.is_final else None


def stage_view(plan: Plan, outputs: Mapping[str, Mapping[str, Any]],
               statuses: Mapping[str, StageStatus],
               pending: PendingOutputs = settled_outputs) -> dict[str, Any]:
    """`stages` as templates see it; a for_each stage is a map keyed by its items.

    `pending(stage_id, status)` names the outputs of a stage that only an apply will
    tell, or is None when the stage may yet have any output (see StageOutputs).
    """
    view: dict[str, Any] = {}
    for base_id, expanded in plan.expansions.items():
        view[base_id] = {"outputs": {}, "status": {}} if expanded != (base_id,) else {}
        for stage_id in expanded:
            status = statuses.get(stage_id, StageStatus.PENDING)
            update_stage_view(view, plan, stage_id, outputs.get(stage_id, {}), status,
                              pending(stage_id, status))
    return view


def update_stage_view(view: dict[str, Any], plan: Plan, stage_id: str,
                      outputs: Mapping[str, Any] | None, status: StageStatus,
                      pending: frozenset[str] | None) -> None:
    """Change one stage in a view made by `stage_view`: O(1) instead of a rebuild."""
    stage = plan.stages.get(stage_id)
    if stage is None:  # a finally stage: nothing refers to it
        return
    entry = view[stage.base_id]
    if stage.item_key is None:
        known = entry.get("outputs", {}) if outputs is None else outputs
        entry["outputs"] = StageOutputs(known, stage_id=stage_id, pending=pending,
                                        reference=f"{stage.base_id}.outputs", status=status)
        entry["status"] = str(status)
    else:
        known = entry["outputs"].get(stage.item_key, {}) if outputs is None else outputs
        entry["outputs"][stage.item_key] = StageOutputs(
            known, stage_id=stage_id, pending=pending, status=status,
            reference=f"{stage.base_id}.outputs.{stage.item_key}")
        entry["status"][stage.item_key] = str(status)


def template_context(plan: Plan, run: RunInfo, stages: Mapping[str, Any],
                     secrets: Mapping[str, str],
                     stage: PlannedStage | None = None) -> dict[str, Any]:
    """The names a template sees: vars, secrets, stages, run, item, env, runbook."""
    return {
        "vars": plan.vars, "secrets": secrets, "stages": stages,
        "run": {"id": run.id, "status": run.status, "previous": run.previous or {}},
        "item": stage.item if stage is not None else None,
        "env": os.environ,
        "runbook": {"name": plan.name, "dir": str(plan.root), "workspace": plan.workspace,
                    "state_dir": run.state_dir},
    }


class UnkeptOutput:
    """A sensitive output of a stage finished in an earlier process of the run.

    The store never keeps sensitive values, so after a resume they are unknown:
    using one fails with this explanation instead of passing a placeholder along.
    """

    def __init__(self, stage_id: str, name: str) -> None:
        self.stage_id, self.name = stage_id, name

    def problem(self) -> TemplateProblem:
        return TemplateProblem(
            f"output `{self.name}` of stage `{self.stage_id}` is sensitive, so the store did "
            "not keep it, and that stage finished before this process started",
            hint=f"run that stage again with the rest: iacorch retry RUN --from {self.stage_id}")

    def __str__(self) -> str:
        raise self.problem()


def _refuse_unkept(value: Any) -> None:
    if isinstance(value, UnkeptOutput):
        raise value.problem()
    if isinstance(value, dict):
        for item in value.values():
            _refuse_unkept(item)
    elif isinstance(value, list):
        for item in value:
            _refuse_unkept(item)


def render_action(templates: Templates, action_type: str, action: Mapping[str, Any],
                  context: Mapping[str, Any], secrets: Mapping[str, str]) -> dict[str, Any]:
    """Render an action; in its driver's script field (`shell.run`) values are quoted and
    secrets become env references; the items of its argv field become text."""
    spec = driver_spec(action_type)
    script = spec.script_field
    if script is None or script not in action:
        rendered = templates.render(dict(action), context)
        argv = spec.argv_field
        if argv is not None and argv in rendered:
            _refuse_unkept(rendered)  # before to_text turns an unkept output into text
            rendered[argv] = [to_text(item) for item in rendered[argv] or []]
    else:
        rendered = templates.render({k: v for k, v in action.items() if k != script}, context)
        shell_context = dict(context)
        shell_context["secrets"] = {name: shell_secret(name) for name in secrets}
        rendered[script] = templates.render(action[script], shell_context, shell=True)
    _refuse_unkept(rendered)
    return rendered


def build_spec(plan: Plan, stage: PlannedStage, action_type: str,
               rendered: Mapping[str, Any], *, run_id: str, operation: Operation,
               attempt: int, work_dir: str, state_dir: str, secrets: Mapping[str, str],
               saved_plan: str | None = None) -> StageSpec:
    """The serialisable description of one stage attempt."""
    return StageSpec(
        run_id=run_id, stage_id=stage.id, driver=action_type, operation=operation,
        action=rendered, root_dir=str(plan.root), work_dir=work_dir, state_dir=state_dir,
        attempt=attempt, timeout=stage.timeout, saved_plan=saved_plan,
        secret_values=tuple(secrets.values()),
        secret_env={secret_env_name(name): value for name, value in secrets.items()},
        secret_refs=plan.secret_refs)
