"""What a plan run found, stage by stage, and when `plan --detailed-exitcode` exits 2.

Pure functions over the stage records a plan run wrote: the CLI prints their lines, and
the exit 2 rule lives here, next to the verdicts it counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from iacorch.model.results import state_change_words
from iacorch.model.status import StageStatus
from iacorch.store.base import StageRecord

NOT_FULLY_PLANNED = "not_fully_planned"   # in a skipped stage's details: an input is unknown


class PlanVerdict(StrEnum):
    WOULD_CHANGE = "would change"
    NOT_FULLY_PLANNED = "not fully planned"
    NO_CHANGES = "no changes"
    WOULD_RUN = "would run"               # shell and http stages: a plan does not run them
    SKIPPED = "skipped"
    FAILED = "failed"


# a plan "has changes" (exit 2) when a stage would change or could not be planned in full
_PENDING = (PlanVerdict.WOULD_CHANGE, PlanVerdict.NOT_FULLY_PLANNED)
_ALWAYS_COUNTED = (PlanVerdict.WOULD_CHANGE, PlanVerdict.NOT_FULLY_PLANNED,
                   PlanVerdict.NO_CHANGES)


@dataclass(frozen=True, slots=True)
class StagePlan:
    verdict: PlanVerdict
    line: str                             # what the stage would do, in one line


def stage_plans(records: Mapping[str, StageRecord]) -> dict[str, StagePlan]:
    """The verdict and line of every stage a plan run recorded."""
    found = {}
    for stage_id, record in records.items():
        plan = _stage_plan(record)
        if plan is not None:
            found[stage_id] = plan
    return found


def has_pending_changes(plans: Mapping[str, StagePlan]) -> bool:
    """Whether applying would change something, or the plan could not tell (exit 2)."""
    return any(plan.verdict in _PENDING for plan in plans.values())


def plan_counts(plans: Mapping[str, StagePlan]) -> str:
    """"1 would change, 6 not fully planned, 1 no changes" (other verdicts when present)."""
    counts = Counter(plan.verdict for plan in plans.values())
    return ", ".join(f"{counts[verdict]} {verdict.value}" for verdict in PlanVerdict
                     if counts[verdict] or verdict in _ALWAYS_COUNTED)


def _stage_plan(record: StageRecord) -> StagePlan | None:
    if record.status is StageStatus.SKIPPED:
        verdict = (PlanVerdict.NOT_FULLY_PLANNED if record.details.get(NOT_FULLY_PLANNED)
                   else PlanVerdict.SKIPPED)
        return StagePlan(verdict, record.error or "skipped")
    if record.status is StageStatus.FAILED:
        return StagePlan(PlanVerdict.FAILED, f"plan failed: {record.error}")
    if record.changes:
        return _changes_plan(record)
    if record.details.get("would_run") or record.details.get("would_check"):
        return StagePlan(PlanVerdict.WOULD_RUN, "would run")
    return None


def _changes_plan(record: StageRecord) -> StagePlan:
    changes = record.changes or {}
    add, change, destroy = (changes.get(k, 0) for k in ("add", "change", "destroy"))
    outputs = changes.get("outputs") or []
    state_changes = state_change_words(*(changes.get(k, 0)
                                         for k in ("imported", "moved", "forgotten")))
    if add or change or destroy or outputs or state_changes:
        line = ", ".join([f"would change: +{add} ~{change} -{destroy}", *state_changes])
        if outputs:
            line += f", outputs {', '.join(outputs)}"
        verdict = PlanVerdict.WOULD_CHANGE
    else:
        line, verdict = "no changes", PlanVerdict.NO_CHANGES
    not_checkable = record.details.get("not_checkable")
    if not_checkable:
        line += f" ({len(not_checkable)} task(s) not checkable: check_mode false)"
    after_apply = record.details.get("outputs_after_apply")
    if after_apply:
        line += (f"; known only after apply: {', '.join(after_apply)} (the last applied "
                 "values stand in, where there are any)")
    return StagePlan(verdict, line)
