"""Rollback after a failure, rollback on demand, and destroy: undo steps as runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from iacorch.errors import UsageError
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import Plan
from iacorch.model.status import Operation, Phase, RunStatus, StageStatus
from iacorch.store.audit import stage_audit_data
from iacorch.store.base import StageRecord

from .journal import Journal
from .rollback import (
    SKIPPED_BY,
    UndoKind,
    UndoStep,
    nothing_to_undo,
    stages_to_undo,
    undo_step,
)
from .runtime import Runtime

if TYPE_CHECKING:
    from .undo_runner import UndoOutcome

_OUTPUT_HISTORY = 200   # apply runs searched for the outputs a destroy renders with


def previous_run(runtime: Runtime, plan: Plan) -> dict[str, Any] | None:
    """The last successful apply of this runbook and workspace: its vars and outputs."""
    last = runtime.store.last_successful_run(plan.name, plan.workspace)
    if last is None:
        return None
    outputs = {sid: dict(rec.outputs) for sid, rec in runtime.store.stage_records(last.id).items()
               if rec.status.is_done}
    return {"id": last.id, "vars": dict(last.vars), "outputs": outputs}


def rollback_steps(plan: Plan, runtime: Runtime, run_id: str,
                   previous: Mapping[str, Any] | None) -> dict[str, UndoStep]:
    """The undo step of every stage this run touched, by the rules of engine.rollback."""
    records = runtime.store.stage_records(run_id)
    statuses = {sid: rec.status for sid, rec in records.items()}
    previous_outputs = (previous or {}).get("outputs", {})
    steps = {}
    for stage_id in stages_to_undo(plan, statuses):
        details = records[stage_id].details
        untouched = nothing_to_undo(details)
        if untouched is not None:
            steps[stage_id] = UndoStep(stage_id, UndoKind.NOTHING, note=untouched)
            continue
        existed = details.get("stack_existed")
        if existed is None and "stack_created" in details:  # pulumi reports it this way
            existed = not details["stack_created"]
        if existed is None:  # unknown (it failed early): assume it existed if it ever applied
            existed = stage_id in previous_outputs
        steps[stage_id] = undo_step(plan.stages[stage_id], stack_existed=existed,
                                    has_previous=stage_id in previous_outputs)
    return steps


def run_rollback(plan: Plan, runtime: Runtime, run_id: str, *, secrets: Mapping[str, str],
                 masker: Masker, outputs: Mapping[str, Mapping[str, Any]] | None = None,
                 concurrency: int | None = None) -> tuple[RunStatus, UndoOutcome]:
    """Undo what run `run_id` did; continues where an earlier rollback of it stopped."""
    from .undo_runner import UndoInputs, UndoRunner  # here: most runs never undo anything

    previous = previous_run(runtime, plan)
    if previous is not None and previous["id"] == run_id:
        previous = None
    journal = Journal(runtime.store, run_id, masker, runtime.identity, phase=Phase.ROLLBACK)
    journal.run_status(RunStatus.ROLLING_BACK)
    runtime.emit(Event(EventKind.ROLLBACK_STARTED, run_id))
    forward = runtime.store.stage_records(run_id)
    if outputs is None:
        outputs = {sid: dict(rec.outputs) for sid, rec in forward.items() if rec.status.is_done}
    steps = rollback_steps(plan, runtime, run_id, previous)
    earlier = runtime.store.stage_records(run_id, phase=Phase.ROLLBACK)
    done = {sid for sid, rec in earlier.items() if rec.status is StageStatus.ROLLED_BACK}
    skipped = {sid: rec.error or "skipped" for sid, rec in earlier.items()
               if rec.details.get(SKIPPED_BY)}
    runner = UndoRunner(
        plan, runtime, run_id, steps=steps, secrets=secrets, masker=masker, journal=journal,
        inputs=UndoInputs(vars=plan.vars, outputs=outputs,
                          previous_vars=(previous or {}).get("vars"),
                          previous_outputs=(previous or {}).get("outputs")),
        done=done, skipped=skipped, attempts={sid: rec.attempt for sid, rec in earlier.items()},
        concurrency=concurrency)
    outcome = runner.run()
    if runtime.cancel.interrupted:
        status = RunStatus.INTERRUPTED
    else:
        status = RunStatus.ROLLED_BACK if outcome.ok else RunStatus.ROLLBACK_FAILED
    journal.run_status(status, finished_at=runtime.clock(),
                       details={"rollback": {"undone": list(outcome.undone),
                                             "failed": dict(outcome.failed),
                                             "not_undone": dict(outcome.not_undone)}})
    return status, outcome


def skip_undo(plan: Plan, runtime: Runtime, run_id: str, stage_ids: Sequence[str], *,
              reason: str) -> None:
    """A person takes stages off a run's rollback (undone by hand, or nothing to undo):
    recorded and audited, so that `iacorch rollback` undoes the rest, these left alone."""
    touched = set(stages_to_undo(plan, {sid: rec.status for sid, rec
                                        in runtime.store.stage_records(run_id).items()}))
    earlier = runtime.store.stage_records(run_id, phase=Phase.ROLLBACK)
    for stage_id in stage_ids:
        if stage_id not in touched:
            raise UsageError(f"run {run_id} did not touch `{stage_id}`: it has nothing to undo",
                             hint=f"stages it touched: {', '.join(sorted(touched)) or 'none'}")
        if stage_id in earlier and earlier[stage_id].status is StageStatus.ROLLED_BACK:
            raise UsageError(f"`{stage_id}` of run {run_id} is already rolled back")
    now = runtime.clock()
    with runtime.store.transaction(durable=True):
        for stage_id in stage_ids:
            attempt = earlier[stage_id].attempt + 1 if stage_id in earlier else 1
            skipped = StageRecord(
                run_id, stage_id, attempt, StageStatus.SKIPPED, started_at=now,
                finished_at=now, error=f"undo skipped by {runtime.identity}: {reason}",
                details={SKIPPED_BY: runtime.identity, "reason": reason}, phase=Phase.ROLLBACK)
            runtime.store.record_stage(skipped)
            runtime.store.append_audit("rollback_stage_skipped", run_id=run_id,
                                       stage_id=stage_id, actor=runtime.identity,
                                       data={"reason": reason, **stage_audit_data(skipped)})


def recorded_outputs(runtime: Runtime, plan: Plan) -> dict[str, dict[str, Any]]:
    """Each stage's outputs from the latest apply of this runbook and workspace that
    finished it, whatever became of that run: a stack made by a run that failed or could
    not roll back is still there, and destroying it needs them. Outputs of a stage its
    run then undid are used only when no other run has any."""
    kept: dict[str, dict[str, Any]] = {}
    undone: dict[str, dict[str, Any]] = {}
    for run in runtime.store.list_runs(runbook=plan.name, operation=Operation.APPLY.value,
                                       limit=_OUTPUT_HISTORY):
        if run.workspace != plan.workspace:
            continue
        undo_records = runtime.store.stage_records(run.id, Phase.ROLLBACK)
        rolled_back = {sid for sid, rec in undo_records.items()
                       if rec.status is StageStatus.ROLLED_BACK}
        for stage_id, record in runtime.store.stage_records(run.id).items():
            if record.status in (StageStatus.SUCCEEDED, StageStatus.MARKED_DONE):
                found = undone if stage_id in rolled_back else kept
                found.setdefault(stage_id, dict(record.outputs))
    return {**undone, **kept}


def destroy_steps(plan: Plan, previous: Mapping[str, Any] | None) -> dict[str, UndoStep]:
    """Every stage's way down, for `iacorch destroy`."""
    return {sid: undo_step(stage, stack_existed=True, has_previous=previous is not None,
                           destroy=True) for sid, stage in plan.stages.items()}


def run_destroy(plan: Plan, runtime: Runtime, run_id: str, *, secrets: Mapping[str, str],
                masker: Masker, journal: Journal,
                concurrency: int | None = None) -> tuple[RunStatus, UndoOutcome]:
    """Take down everything the runbook made, rendered with the outputs its runs recorded.

    A stage whose undo cannot be rendered (its upstream outputs were never recorded, or
    the runbook changed) is reported, and the stages it depends on still go down.
    """
    from .undo_runner import UndoInputs, UndoRunner

    previous = previous_run(runtime, plan)
    outputs = {**(previous or {}).get("outputs", {}), **recorded_outputs(runtime, plan)}
    runner = UndoRunner(
        plan, runtime, run_id, steps=destroy_steps(plan, previous), secrets=secrets,
        masker=masker, journal=journal, inputs=UndoInputs(vars=plan.vars, outputs=outputs),
        concurrency=concurrency, unrendered_blocks=False)
    outcome = runner.run()
    if runtime.cancel.interrupted:
        return RunStatus.INTERRUPTED, outcome
    return (RunStatus.SUCCEEDED if outcome.ok else RunStatus.FAILED), outcome
