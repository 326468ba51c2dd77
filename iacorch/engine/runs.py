"""Starting and resuming runs: the lock, the run record, secrets, and the loop."""

from __future__ import annotations

import secrets as random_tokens
import time
from collections.abc import Mapping, Sequence
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import Plan
from iacorch.model.status import Operation, Phase, RunStatus, StageStatus
from iacorch.store.audit import stage_audit_data
from iacorch.store.base import RunRecord, StageRecord, pid_alive

from .journal import Journal
from .locks import RunLock, lock_key
from .rendering import UnkeptOutput
from .run_state import RunOptions, RunOutcome, RunState
from .runner import Runner
from .runtime import Runtime
from .secrets import resolve_secrets
from .undo_runs import previous_run, run_destroy, run_rollback, skip_undo


def new_run_id(now: float) -> str:
    """Sortable and short enough to type: 20261127-093012-a3f9c1.

    Six random hex digits: a resident server starts dozens of runs a second, and two ids
    alike in one second would refuse a run (four digits collided within a minute).
    """
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(now)) + "-" + random_tokens.token_hex(3)


def start_run(plan: Plan, runtime: Runtime, options: RunOptions, *,
              lock_timeout: float = 0.0, run_id: str | None = None,
              delivery: tuple[str, str] | None = None) -> RunOutcome:
    """Create a run for `plan` and drive it to an outcome under the runbook's lock.

    `delivery`: the (source, id) of the trigger event starting it, claimed in the commit
    that creates the run (journal.DeliveryClaimed when a copy of it came first).
    """
    secrets, masker = _secrets(plan)
    run_id = run_id or new_run_id(runtime.clock())
    lock = RunLock(runtime.store, lock_key(plan.name, plan.workspace), run_id,
                   host=runtime.host, pid=runtime.pid)
    lock.acquire(wait=lock_timeout)
    try:
        journal = Journal(runtime.store, run_id, masker, runtime.identity)
        journal.start_run(_record(plan, runtime, run_id, options.operation, masker, options),
                          delivery)
        previous = previous_run(runtime, plan)
        runner = Runner(plan, runtime, run_id, secrets=secrets, masker=masker, journal=journal,
                        options=options, previous=previous)
        return _finish(runner, journal, runtime)
    finally:
        lock.release()


def plan_run(plan: Plan, runtime: Runtime, options: RunOptions, *, run_id: str,
             delivery: tuple[str, str] | None = None) -> RunOutcome:
    """A dry run of the whole runbook: recorded, but it takes no lock and changes nothing."""
    secrets, masker = _secrets(plan)
    journal = Journal(runtime.store, run_id, masker, runtime.identity)
    journal.start_run(_record(plan, runtime, run_id, Operation.PLAN, masker, options), delivery)
    runner = Runner(plan, runtime, run_id, secrets=secrets, masker=masker, journal=journal,
                    options=options, previous=previous_run(runtime, plan))
    return _finish(runner, journal, runtime)


def resume_run(plan: Plan, run: RunRecord, runtime: Runtime, *, rerun_interrupted: bool = False,
               lock_timeout: float = 0.0, concurrency: int | None = None) -> RunOutcome:
    """Continue a run: finished stages keep their outputs, the rest run (again)."""
    _refuse_if_alive(run, runtime)
    if run.details.get("phase") == Phase.ROLLBACK or run.status in (RunStatus.ROLLING_BACK,
                                                                 RunStatus.ROLLBACK_FAILED):
        return rollback_run(plan, run, runtime, concurrency=concurrency)
    if run.status is RunStatus.SUCCEEDED:
        raise UsageError(f"run {run.id} already succeeded; there is nothing to resume")
    secrets, masker = _secrets(plan)
    lock = RunLock(runtime.store, lock_key(plan.name, plan.workspace), run.id,
                   host=runtime.host, pid=runtime.pid)
    lock.acquire(wait=lock_timeout)
    try:
        state = _state_from_store(plan, runtime, run.id, rerun_interrupted)
        journal = Journal(runtime.store, run.id, masker, runtime.identity)
        journal.run_status(RunStatus.RUNNING)
        runtime.store.append_audit("run_resumed", run_id=run.id, actor=runtime.identity,
                                   data={"pid": runtime.pid, "host": runtime.host})
        selection = run.details.get("selection", {})
        options = RunOptions(operation=Operation(run.operation),
                             only=tuple(selection.get("only", ())),
                             targets=tuple(selection.get("targets", ())),
                             concurrency=concurrency)
        runner = Runner(plan, runtime, run.id, secrets=secrets, masker=masker, journal=journal,
                        state=state, options=options, started_by=run.user,
                        previous=previous_run(runtime, plan), started_at=run.started_at,
                        deadline_breached=bool(run.details.get("deadline_breached")))
        return _finish(runner, journal, runtime)
    finally:
        lock.release()


def _finish(runner: Runner, journal: Journal, runtime: Runtime) -> RunOutcome:
    """Run the loop, then what follows it (rollback, `finally`), telling the sinks."""
    plan = runner.plan
    _announce(runtime, plan, runner.run_id, runner.options.operation.value)
    outcome = runner.run()
    runner.check_deadline()    # passed after the loop's last look
    status = outcome.status
    if runtime.interrupt_signal is not None and status is not RunStatus.SUCCEEDED:
        status = RunStatus.INTERRUPTED
    error = "; ".join(f"{sid}: {err}" for sid, err in outcome.errors.items()
                      if outcome.statuses.get(sid) is StageStatus.FAILED) or None
    final = status in (RunStatus.SUCCEEDED, RunStatus.FAILED)
    journal.run_status(status, finished_at=runtime.clock() if final else None, error=error,
                       details={"elapsed": round(outcome.elapsed, 3),
                                "deadline_breached": runner.breached})
    undo = None
    if status is RunStatus.FAILED and runner.rollback_requested:
        journal.run_status(RunStatus.ROLLING_BACK, details={"phase": "rollback"})
        status, undo = run_rollback(runner.plan, runtime, runner.run_id, secrets=runner.secrets,
                                    masker=runner.masker, outputs=runner.state.outputs,
                                    concurrency=runner.options.concurrency)
    runner.run_finally(status)
    if runner.check_deadline():   # passed while rolling back or in `finally:`
        runtime.store.update_run(runner.run_id, status=status,
                                 details={"deadline_breached": True})
    ended = RunOutcome(outcome.run_id, status, outcome.statuses, outcome.errors,
                       runner.elapsed(), outcome.deadline, outcome.waiting_gates, undo,
                       outcome.warnings, deadline_breached_now=runner.breached_now)
    runtime.emit(ended.finished_event(runner.options.operation.value))
    return ended


def rollback_run(plan: Plan, run: RunRecord, runtime: Runtime, *,
                 concurrency: int | None = None, skip: Sequence[str] = (),
                 reason: str = "") -> RunOutcome:
    """`iacorch rollback RUN` (and resume of a run whose rollback stopped).

    `skip`: stages a person undid by hand (or found nothing to undo in), taken off the
    rollback with `reason`, audited: the way out of a `rollback_failed` that cannot be fixed.
    """
    _refuse_if_alive(run, runtime)
    if skip and not reason.strip():
        raise UsageError("--skip needs a --reason", hint="say what was done by hand "
                         "(or why there is nothing to undo): it goes to the audit log")
    secrets, masker = _secrets(plan)
    lock = RunLock(runtime.store, lock_key(plan.name, plan.workspace), run.id,
                   host=runtime.host, pid=runtime.pid)
    lock.acquire()
    started = time.monotonic()
    try:
        if skip:
            skip_undo(plan, runtime, run.id, skip, reason=reason)
        runtime.store.update_run(run.id, status=run.status, details={"phase": "rollback"})
        runtime.store.append_audit("rollback_requested", run_id=run.id, actor=runtime.identity)
        _announce(runtime, plan, run.id, run.operation)
        status, undo = run_rollback(plan, runtime, run.id, secrets=secrets, masker=masker,
                                    concurrency=concurrency)
    finally:
        lock.release()
    statuses = {sid: rec.status for sid, rec in runtime.store.stage_records(run.id).items()}
    outcome = RunOutcome(run.id, status, statuses, {}, time.monotonic() - started, None, (),
                         undo)
    runtime.emit(outcome.finished_event(run.operation))
    return outcome


def destroy(plan: Plan, runtime: Runtime, *, run_id: str, lock_timeout: float = 0.0,
            concurrency: int | None = None) -> RunOutcome:
    """A destroy run: every stage's way down, in reverse dependency order."""
    secrets, masker = _secrets(plan)
    lock = RunLock(runtime.store, lock_key(plan.name, plan.workspace), run_id,
                   host=runtime.host, pid=runtime.pid)
    lock.acquire(wait=lock_timeout)
    started = time.monotonic()
    try:
        journal = Journal(runtime.store, run_id, masker, runtime.identity)
        journal.start_run(_record(plan, runtime, run_id, Operation.DESTROY, masker,
                                  RunOptions(operation=Operation.DESTROY)))
        _announce(runtime, plan, run_id, Operation.DESTROY.value)
        status, undo = run_destroy(plan, runtime, run_id, secrets=secrets, masker=masker,
                                   journal=journal, concurrency=concurrency)
        journal.run_status(status, finished_at=runtime.clock(),
                           error="; ".join(f"{k}: {v}" for k, v in undo.failed.items()) or None)
    finally:
        lock.release()
    statuses = {sid: rec.status for sid, rec in runtime.store.stage_records(run_id).items()}
    outcome = RunOutcome(run_id, status, statuses, dict(undo.failed),
                         time.monotonic() - started, None, (), undo)
    runtime.emit(outcome.finished_event(Operation.DESTROY.value))
    return outcome


def _announce(runtime: Runtime, plan: Plan, run_id: str, operation: str) -> None:
    runtime.emit(Event(EventKind.RUN_STARTED, run_id, data={
        "runbook": plan.name, "workspace": plan.workspace, "plan_hash": plan.plan_hash,
        "operation": operation}))


def _secrets(plan: Plan) -> tuple[dict[str, str], Masker]:
    """The runbook's secrets, resolved once for this run, and the masker that hides them."""
    secrets = resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations)
    return secrets, Masker(secrets.values())


def _refuse_if_alive(run: RunRecord, runtime: Runtime) -> None:
    if run.status is RunStatus.RUNNING and run.host == runtime.host and pid_alive(run.pid) \
            and run.pid != runtime.pid:
        raise UsageError(f"run {run.id} is still running (pid {run.pid})",
                         hint=f"follow it with `iacorch logs {run.id} --follow`")


def _record(plan: Plan, runtime: Runtime, run_id: str, operation: Operation, masker: Masker,
            options: RunOptions) -> RunRecord:
    return RunRecord(
        id=run_id, runbook=plan.name, runbook_path=str(plan.path.resolve()),
        workspace=plan.workspace, plan_hash=plan.plan_hash,
        vars=masker.mask_value(dict(plan.vars)),  # type: ignore[arg-type]
        status=RunStatus.RUNNING, operation=operation, started_at=runtime.clock(),
        user=runtime.identity, host=runtime.host, pid=runtime.pid,
        details=_details(plan, options))


def _state_from_store(plan: Plan, runtime: Runtime, run_id: str,
                      rerun_interrupted: bool) -> RunState:
    state = RunState()
    unsure: list[str] = []
    for stage_id, record in runtime.store.stage_records(run_id).items():
        if stage_id not in plan.stages and stage_id not in plan.finally_stages:
            continue
        state.attempts[stage_id] = record.attempt
        stage = plan.stages.get(stage_id) or plan.finally_stages[stage_id]
        if stage.approval is not None and "gate_hash" in record.details:
            state.gate_details[stage_id] = dict(record.details)
        if record.status.is_done and not stage.is_finally:
            state.statuses[stage_id] = record.status
            state.outputs[stage_id] = {
                name: UnkeptOutput(stage_id, name) if name in record.sensitive_outputs
                else value for name, value in record.outputs.items()}
        elif record.status in (StageStatus.RUNNING, StageStatus.INTERRUPTED) \
                and not stage.idempotent and not rerun_interrupted:
            unsure.append(stage_id)
    if unsure:
        raise UsageError(
            f"stage{'s' if len(unsure) > 1 else ''} {', '.join(unsure)} stopped mid-way and "
            "may not be safe to run twice (`idempotent: false`)",
            hint="check what it did, then resume with --rerun-interrupted, or record it done "
                 "with `iacorch mark-done`")
    return state


def _details(plan: Plan, options: RunOptions) -> Mapping[str, Any]:
    return {"deadline": plan.deadline, "mocked": options.mock,
            "selection": {"only": list(options.only), "targets": list(options.targets)}}


def mark_done(plan: Plan, run: RunRecord, runtime: Runtime, stage_id: str, *, reason: str,
              outputs: Mapping[str, Any]) -> None:
    """An operator fixed a stage by hand: record it done (audited) so the run can go on."""
    if stage_id not in plan.stages:
        raise UsageError(f"run {run.id} has no stage `{stage_id}`",
                         hint=f"stages: {', '.join(plan.stages)}")
    record = runtime.store.stage_records(run.id).get(stage_id)
    if record is not None and record.status.is_done:
        raise UsageError(f"stage `{stage_id}` is already {record.status.value}")
    attempt = (record.attempt if record else 0) + 1
    now = runtime.clock()
    marked = StageRecord(
        run.id, stage_id, attempt, StageStatus.MARKED_DONE, started_at=now, finished_at=now,
        error=f"marked done by {runtime.identity}: {reason}", outputs=dict(outputs),
        details={"marked_by": runtime.identity, "reason": reason})
    with runtime.store.transaction(durable=True):
        runtime.store.record_stage(marked)
        runtime.store.append_audit("stage_marked_done", run_id=run.id, stage_id=stage_id,
                                   actor=runtime.identity,
                                   data={"reason": reason, "outputs": sorted(outputs),
                                         **stage_audit_data(marked)})


def reset_from(plan: Plan, run: RunRecord, runtime: Runtime, stage_id: str) -> list[str]:
    """Make a stage and everything downstream of it pending again (for `retry --from`)."""
    base = plan.expansions.get(stage_id, (stage_id,))
    if not all(sid in plan.stages for sid in base):
        raise UsageError(f"run {run.id} has no stage `{stage_id}`",
                         hint=f"stages: {', '.join(plan.expansions)}")
    dependents = plan.dependents()
    chosen: list[str] = []
    pending = list(base)
    while pending:
        current = pending.pop()
        if current not in chosen:
            chosen.append(current)
            pending.extend(dependents.get(current, []))
    records = runtime.store.stage_records(run.id)
    now = runtime.clock()
    with runtime.store.transaction():
        for sid in chosen:
            attempt = records[sid].attempt + 1 if sid in records else 1
            runtime.store.record_stage(StageRecord(run.id, sid, attempt, StageStatus.PENDING,
                                                   finished_at=now,
                                                   details={"reset_by": "retry --from"}))
        runtime.store.update_run(run.id, status=RunStatus.FAILED, details={"phase": "forward"})
        runtime.store.append_audit("retry_from", run_id=run.id, stage_id=stage_id,
                                   actor=runtime.identity, data={"stages": sorted(chosen)})
    return [sid for sid in plan.stages if sid in chosen]
