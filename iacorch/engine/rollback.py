"""Pure rollback rules: what undoes each stage, and in which order.

A stage rolls back only after every stage that depended on it has rolled back,
so the reversed graph gives the order and the parallelism.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from iacorch.model.driver_spec import DefaultUndo
from iacorch.model.plan import Plan, PlannedStage
from iacorch.model.registry import driver_spec
from iacorch.model.status import Operation, StageStatus

NOTHING_TO_UNDO_CHECK = "a read-only stage changes nothing"
# In a stage attempt's details: it failed before its tool started (while rendering its
# templates, say). The engine sets it; drivers set NOTHING_APPLIED when their tool ran
# but failed before changing anything (a Terraform plan that failed).
TOOL_NOT_STARTED = "tool_not_started"
NOTHING_APPLIED = "nothing_applied"
SKIPPED_BY = "skipped_by"   # in a rollback record: the person who took the stage off the undo


class UndoKind(StrEnum):
    ACTION = "action"          # the stage's own `rollback:` action
    DESTROY = "destroy"        # a stack this run created: destroy it
    REAPPLY = "reapply"        # a stack that existed: apply the last good inputs again
    NOTHING = "nothing"        # no automatic undo; said so in the summary


@dataclass(frozen=True, slots=True)
class UndoStep:
    stage_id: str
    kind: UndoKind
    action_type: str | None = None            # the driver
    action: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def operation(self) -> Operation:
        return Operation.DESTROY if self.kind is UndoKind.DESTROY else Operation.APPLY


def undo_step(stage: PlannedStage, *, stack_existed: bool | None, has_previous: bool,
              destroy: bool = False) -> UndoStep:
    """How to undo one stage (`destroy=True`: take it down for good, as `iacorch destroy`);
    without a `rollback:` of its own, as its driver's `default_undo` says."""
    if stage.approval is not None:
        return UndoStep(stage.id, UndoKind.NOTHING, note="approval gate")
    # `destroy:` is the way down for good; unset, it follows `rollback:`
    key = "destroy" if destroy and stage.destroy is not None else "rollback"
    rule = stage.destroy if key == "destroy" else stage.rollback
    if rule == "none":
        return UndoStep(stage.id, UndoKind.NOTHING, note=f"`{key}: none`")
    if isinstance(rule, Mapping):
        (action_type, action), = rule.items()
        return UndoStep(stage.id, UndoKind.ACTION, action_type, action,
                        note=f"its `{key}:` action")
    undo = driver_spec(stage.action_type).default_undo if stage.action_type \
        else DefaultUndo.EXPLICIT
    if undo is DefaultUndo.STACK:
        if destroy or not stack_existed:
            return UndoStep(stage.id, UndoKind.DESTROY, stage.action_type, stage.action,
                            note="destroy" if destroy else "created by this run: destroy")
        if has_previous:
            return UndoStep(stage.id, UndoKind.REAPPLY, stage.action_type, stage.action,
                            note="existed before: re-apply the last successful inputs")
        return UndoStep(stage.id, UndoKind.NOTHING,
                        note="existed before, and no successful run holds its earlier inputs")
    if undo is DefaultUndo.READ_ONLY and stage.idempotent:
        return UndoStep(stage.id, UndoKind.NOTHING, note=NOTHING_TO_UNDO_CHECK)
    return UndoStep(stage.id, UndoKind.NOTHING,
                    note=f"{stage.action_type} stages have no automatic rollback; "
                         "give the stage a `rollback:` action")


def nothing_to_undo(details: Mapping[str, Any]) -> str | None:
    """Why a stage's last attempt left nothing to undo (from its recorded details), or None."""
    if details.get(TOOL_NOT_STARTED):
        return "it failed before its tool started: nothing to undo"
    if details.get(NOTHING_APPLIED):
        return "it failed before changing anything"
    return None


def stages_to_undo(plan: Plan, statuses: Mapping[str, StageStatus]) -> list[str]:
    """Stages this run completed, and failed ones, which may have applied part of their work."""
    touched = (StageStatus.SUCCEEDED, StageStatus.FAILED, StageStatus.INTERRUPTED)
    return [sid for sid in plan.stages if statuses.get(sid) in touched]


def ready_to_undo(plan: Plan, pending: Iterable[str], done: set[str]) -> list[str]:
    """Pending stages none of whose pending dependents remain: safe to undo now."""
    pending_set = set(pending)
    waiting_on: dict[str, int] = {sid: 0 for sid in pending_set}
    for sid in pending_set:
        for need in plan.stages[sid].needs:
            if need in waiting_on and sid not in done:
                waiting_on[need] += 1
    return [sid for sid in plan.stages if sid in pending_set and sid not in done
            and waiting_on[sid] == 0]
