"""Pure scheduling rules: which stages are selected, ready, or blocked by a failure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from iacorch.model.plan import Plan
from iacorch.model.status import StageKind, StageStatus

_BLOCKING = (StageStatus.FAILED, StageStatus.CANCELLED, StageStatus.ROLLED_BACK,
             StageStatus.ROLLBACK_FAILED)


def select_stages(plan: Plan, *, only: Iterable[str] = (), targets: Iterable[str] = ()) -> set[str]:
    """Stage ids to run: `--target` stages with everything they need, filtered by `--only` kinds.

    A target may name a base id (`web`) to take all its for_each expansions.
    """
    selected = set(plan.stages)
    target_list = list(targets)
    if target_list:
        wanted: set[str] = set()
        pending = [e for t in target_list for e in plan.expansions.get(t, (t,))]
        while pending:
            stage_id = pending.pop()
            if stage_id in wanted:
                continue
            wanted.add(stage_id)
            pending.extend(plan.stages[stage_id].needs)
        selected &= wanted
    kinds = {StageKind(k) for k in only}
    if kinds:
        selected = {sid for sid in selected if plan.stages[sid].kind in kinds}
    return selected


def ready_stages(plan: Plan, statuses: Mapping[str, StageStatus],
                 selected: set[str]) -> list[str]:
    """Pending selected stages whose needs are done (or unselected), in plan order."""
    ready = []
    for stage_id, stage in plan.stages.items():
        if statuses.get(stage_id, StageStatus.PENDING) is not StageStatus.PENDING:
            continue
        if stage_id not in selected:
            continue
        if all(need not in selected or statuses.get(need, StageStatus.PENDING).is_done
               for need in stage.needs):
            ready.append(stage_id)
    return ready


def blocked_stages(plan: Plan, statuses: Mapping[str, StageStatus],
                   selected: set[str]) -> dict[str, str]:
    """Pending stages that can never run because a need failed -> the upstream culprit.

    Used with `on_failure: continue`: these are marked skipped while independent
    branches finish. Blocking propagates along the plan's topological order.
    """
    culprit: dict[str, str] = {}
    for stage_id, stage in plan.stages.items():
        if stage_id not in selected or statuses.get(stage_id) not in (None, StageStatus.PENDING):
            continue
        for need in stage.needs:
            if need in culprit:
                culprit[stage_id] = culprit[need]
                break
            if statuses.get(need) in _BLOCKING:
                culprit[stage_id] = need
                break
    return culprit
