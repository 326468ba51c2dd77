"""Rollback after a failure, rollback on demand, and destroy: undo steps as runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import Plan
from iacorch.model.status import RunStatus, StageStatus

from .journal import Journal
from .rollback import UndoKind, UndoStep, stages_to_undo, undo_step
from .runtime import Runtime

if TYPE_CHECKING:
    from .undo_runner import UndoOutcome


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
        if details.get("nothing_applied"):
            steps[stage_id] = UndoStep(stage_id, UndoKind.NOTHING,
                                       note="it failed before changing anything")
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
    journal = Journal(runtime.store, run_id, masker, runtime.identity, phase="rollback")
    journal.run_status(RunStatus.ROLLING_BACK)
    runtime.emit(Event(EventKind.ROLLBACK_STARTED, run_id))
    forward = runtime.store.stage_records(run_id)
    if outputs is None:
        outputs = {sid: dict(rec.outputs) for sid, rec in forward.items() if rec.status.is_done}
    steps = rollback_steps(plan, runtime, run_id, previous)
    earlier = runtime.store.stage_records(run_id, phase="rollback")
    done = {sid for sid, rec in earlier.items() if rec.status is StageStatus.ROLLED_BACK}
    runner = UndoRunner(
        plan, runtime, run_id, steps=steps, secrets=secrets, masker=masker, journal=journal,
        inputs=UndoInputs(vars=plan.vars, outputs=outputs,
                          previous_vars=(previous or {}).get("vars"),
                          previous_outputs=(previous or {}).get("outputs")),
        done=done, attempts={sid: rec.attempt for sid, rec in earlier.items()},
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


def destroy_steps(plan: Plan, previous: Mapping[str, Any] | None) -> dict[str, UndoStep]:
    """Every stage's way down, for `iacorch destroy`."""
    return {sid: undo_step(stage, stack_existed=True, has_previous=previous is not None,
                           destroy=True) for sid, stage in plan.stages.items()}


def run_destroy(plan: Plan, runtime: Runtime, run_id: str, *, secrets: Mapping[str, str],
                masker: Masker, journal: Journal,
                concurrency: int | None = None) -> tuple[RunStatus, UndoOutcome]:
    """Take down everything the runbook made, using the last successful run's outputs."""
    from .undo_runner import UndoInputs, UndoRunner

    previous = previous_run(runtime, plan)
    runner = UndoRunner(
        plan, runtime, run_id, steps=destroy_steps(plan, previous), secrets=secrets,
        masker=masker, journal=journal,
        inputs=UndoInputs(vars=plan.vars, outputs=(previous or {}).get("outputs", {})),
        concurrency=concurrency)
    outcome = runner.run()
    if runtime.cancel.interrupted:
        return RunStatus.INTERRUPTED, outcome
    return (RunStatus.SUCCEEDED if outcome.ok else RunStatus.FAILED), outcome
