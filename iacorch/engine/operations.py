"""Run operations every front door shares: what the CLI (and later the server) calls.

A verb that acts on an existing run (resume, approve, reject, rollback, retry,
mark-done) rebuilds that run's plan from what the run recorded, never from the
command line: a runbook with a required var can always be moved on. Nothing here
needs click, the main thread or signal handlers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from iacorch.errors import ApprovalError, IacorchError, UsageError
from iacorch.model.status import RunStatus

if TYPE_CHECKING:
    from iacorch.engine.approvals import Decision
    from iacorch.model.plan import Plan
    from iacorch.store.base import RunRecord, Store


def effective_status(run: RunRecord) -> RunStatus:
    """A run recorded as running whose process is gone from this host has died."""
    import socket

    from iacorch.store.base import pid_alive

    if run.status is RunStatus.RUNNING and run.host == socket.gethostname() \
            and not pid_alive(run.pid):
        return RunStatus.DIED
    return run.status


def runs_at_gates(store: Store, limit: int, runbook: str | None = None,
                  operation: str | None = None) -> list[RunRecord]:
    """Runs with a gate waiting for a decision, newest first: suspended ones, and ones
    interrupted while a gate asked (approve, then resume)."""
    from iacorch.model.status import StageStatus

    def listed(status: RunStatus) -> list[RunRecord]:
        return store.list_runs(limit=limit, runbook=runbook, operation=operation, status=status)

    found = listed(RunStatus.WAITING_APPROVAL) + [
        run for run in listed(RunStatus.INTERRUPTED)
        if any(rec.status is StageStatus.WAITING_APPROVAL
               for rec in store.stage_records(run.id).values())]
    found.sort(key=lambda run: run.started_at, reverse=True)
    return found if limit < 0 else found[:limit]


def plan_of_run(run: RunRecord) -> Plan:
    """The plan a run was started with: its runbook compiled with the run's recorded vars.

    The recorded vars are the resolved values (defaults, `--var`, var files), so no
    flag is needed again. A runbook edited since compiles to another plan hash and is
    refused, so that resume and rollback never run something other than what started.
    """
    from iacorch.engine.launch import var_flag
    from iacorch.runbook.compiler import compile_document
    from iacorch.runbook.source import load_document

    path = Path(run.runbook_path)
    if not path.is_file():
        raise UsageError(f"run {run.id} used {run.runbook_path}, which no longer exists",
                         hint="restore the runbook at that path to act on this run")
    document = load_document(path)
    declared = document.data.get("vars") if isinstance(document.data, dict) else None
    recorded = {name: var_flag(value) for name, value in run.vars.items()
                if isinstance(declared, dict) and name in declared and value is not None}
    try:
        plan = compile_document(document, cli_vars=recorded)
    except IacorchError as exc:
        raise UsageError(
            f"{run.runbook_path} no longer compiles with the inputs run {run.id} recorded",
            hint=f"it changed since the run started; start a new run with `iacorch apply` "
                 f"({exc.message})") from None
    if plan.plan_hash != run.plan_hash:
        raise UsageError(
            f"{run.runbook_path} changed since run {run.id} started (plan "
            f"{run.plan_hash[:12]} -> {plan.plan_hash[:12]})",
            hint="resuming would run a different plan than the one started; start a new run "
                 "with `iacorch apply`")
    return plan


def decide_gate(store: Store, run_id: str, gate_id: str, decision: Decision,
                now: float) -> RunRecord:
    """Approve or reject the gate a run waits at, by the engine's rules (approvals.py)."""
    from iacorch.engine.approvals import OpenGate, record_decision
    from iacorch.model.status import StageStatus

    run = store.get_run(run_id)
    record = store.stage_records(run.id).get(gate_id)
    if record is None or record.status is not StageStatus.WAITING_APPROVAL:
        raise ApprovalError(f"run {run.id} is not waiting at a gate named `{gate_id}`",
                            hint="see `iacorch runs --waiting`")
    stage = plan_of_run(run).stages.get(gate_id)
    if stage is None or stage.approval is None:
        raise ApprovalError(f"`{gate_id}` is not an approval gate of {run.runbook_path}")
    opened = OpenGate(run.id, gate_id, stage.approval,
                      record.details.get("gate_hash", run.plan_hash),
                      record.details.get("opened_at"), run.user)
    record_decision(store, opened, decision, now)
    return run
