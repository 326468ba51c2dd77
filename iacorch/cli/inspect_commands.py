"""Commands that read or mend the store: runs, show, logs, unlock, audit, approve, reject."""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from iacorch.cli.compile_commands import load_guard, policy_option
from iacorch.cli.session import open_store, store_option
from iacorch.engine.launch import state_dir_for
from iacorch.engine.operations import effective_status, runs_at_gates
from iacorch.engine.stage_log import LogTail
from iacorch.errors import UsageError
from iacorch.model.status import Choice, Phase, RunStatus, StageStatus
from iacorch.store.base import RunRecord, Store

_PROBLEMS_SHOWN = 20  # stage records listed by `audit verify`; the count says how many more


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


@click.command()
@store_option
@click.option("--limit", default=20, show_default=True)
@click.option("--runbook", help="Only runs of this runbook name.")
@click.option("--kind", "operation", type=click.Choice(["apply", "plan", "drift", "destroy",
                                                        "rollback"]))
@click.option("--waiting", is_flag=True, help="Only gates waiting for a decision.")
@click.option("--json", "as_json", is_flag=True)
def runs(store_url: str | None, limit: int, runbook: str | None, operation: str | None,
         waiting: bool, as_json: bool) -> None:
    """List runs, newest first."""
    store = open_store(store_url)
    records = (runs_at_gates(store, limit, runbook, operation) if waiting
               else store.list_runs(limit=limit, runbook=runbook, operation=operation))
    rows: list[dict[str, Any]] = [{"id": r.id, "runbook": r.runbook, "workspace": r.workspace,
             "operation": r.operation, "status": effective_status(r).value,
             "started": r.started_at, "finished": r.finished_at, "user": r.user,
             **({"drift": r.details.get("drift")} if r.operation == "drift" else {})}
            for r in records]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no runs yet")
        return
    click.echo(f"{'RUN':22} {'RUNBOOK':18} {'WORKSPACE':10} {'OP':8} {'STATUS':17} "
               f"{'STARTED':19} FINISHED")
    for row in rows:
        click.echo(f"{row['id']:22} {row['runbook'][:18]:18} {row['workspace'][:10]:10} "
                   f"{row['operation']:8} {row['status']:17} {_when(row['started']):19} "
                   f"{_when(row['finished'])}")
        if waiting:
            _print_waiting_gates(store, records[rows.index(row)])
        if row.get("drift"):
            from iacorch.cli.drift_commands import drift_run_line

            click.echo(drift_run_line(row) or "    in sync")


def _print_waiting_gates(store: Store, run: RunRecord) -> None:
    for stage_id, record in store.stage_records(run.id).items():
        if record.status is StageStatus.WAITING_APPROVAL:
            opened = record.details.get("opened_at") or record.finished_at or run.started_at
            deciders = record.details.get("approvers") or ["anyone running the runbook"]
            click.echo(f"    gate {stage_id}: waiting {(time.time() - opened) / 60:.0f} min; "
                       f"may decide: {', '.join(deciders)}; "
                       f"iacorch approve {run.id} {stage_id}")


@click.command()
@click.argument("run_id", metavar="RUN")
@store_option
@click.option("--json", "as_json", is_flag=True)
def show(run_id: str, store_url: str | None, as_json: bool) -> None:
    """Show a run: its stages with status, timings, attempts and (masked) outputs."""
    from iacorch.report import run_report

    store = open_store(store_url)
    run = store.get_run(run_id)
    stages = store.stage_records(run.id)
    report = run_report(run, stages)
    report["run"]["status"] = effective_status(run).value
    undo = store.stage_records(run.id, phase=Phase.ROLLBACK)
    report["rollback"] = [{"id": sid, "status": rec.status.value, "error": rec.error}
                          for sid, rec in undo.items()]
    from iacorch.cli.drift_commands import history_report, history_text

    report["drift_history"] = history_report(store, run.runbook, run.workspace)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    info = report["run"]
    click.echo(f"run {run.id}  {info['status']}  {run.operation} {run.runbook} "
               f"({run.workspace})  by {run.user or '?'}")
    click.echo(f"  started {_when(run.started_at)}, finished {_when(run.finished_at)}, "
               f"plan {run.plan_hash[:12]}")
    if run.vars:
        click.echo("  vars: " + ", ".join(
            f"{name}={value if isinstance(value, str) else json.dumps(value)}"
            for name, value in run.vars.items()))
    if run.error:
        click.echo(f"  error: {run.error}")
    for stage in report["stages"]:
        duration = f"{stage['duration']:.1f}s" if stage["duration"] is not None else ""
        changes = stage["changes"]
        summary = (f" +{changes['add']} ~{changes['change']} -{changes['destroy']}"
                   if changes else "")
        click.echo(f"  {stage['id']:24} {stage['status']:17} attempt {stage['attempt']} "
                   f"{duration:>8}{summary}")
        if stage["error"]:
            click.echo(f"      {stage['error']}")
        for name, value in stage["outputs"].items():
            shown = value if isinstance(value, str) else json.dumps(value)
            click.echo(f"      {name} = {shown[:100]}")
    if report["rollback"]:
        click.echo("  rollback:")
        for step in report["rollback"]:
            note = f"  ({step['error']})" if step["error"] else ""
            click.echo(f"  {step['id']:24} {step['status']}{note}")
    for line in history_text(store, run.runbook, run.workspace):
        click.echo(line)


@click.command()
@click.argument("run_id", metavar="RUN")
@click.argument("stage", required=False)
@store_option
@click.option("--follow", "-f", is_flag=True, help="Keep printing as the run writes.")
def logs(run_id: str, stage: str | None, store_url: str | None, follow: bool) -> None:
    """Print a run's stage logs (all stages, or one)."""
    store = open_store(store_url)
    run = store.get_run(run_id)
    run_dir = state_dir_for(store_url) / "runs" / run.id
    if stage is not None and stage not in store.stage_records(run.id):
        # a stage's directory appears with its first line of output: ask the store instead
        known = sorted(store.stage_records(run.id))
        raise UsageError(f"run {run.id} has no stage `{stage}` that started",
                         hint=f"stages that started: {', '.join(known) or '(none yet)'}")
    tails: dict[Path, LogTail] = {}
    while True:
        final = not follow or store.get_run(run.id).status is not RunStatus.RUNNING
        for log in sorted(run_dir.glob(f"{stage or '*'}/attempt-*.log")):
            tail = tails.setdefault(log, LogTail(log))
            for line in tail.new_lines(final=final):
                click.echo(f"{log.parent.name} #{log.stem.removeprefix('attempt-')} | "
                           f"{line.rstrip()}" if stage is None else line.rstrip())
        if final:
            break
        time.sleep(0.5)


@click.command()
@click.argument("key")
@click.option("--reason", required=True, help="Why the lock is being broken (audited).")
@store_option
def unlock(key: str, reason: str, store_url: str | None) -> None:
    """Break the lock KEY (runbook/workspace) held by a run that is gone."""
    from iacorch.engine.runtime import current_identity

    store = open_store(store_url)
    with store.transaction(durable=True):
        holder = store.force_unlock(key, actor=current_identity(), reason=reason)
    if holder is None:
        known = ", ".join(lock.key for lock in store.list_locks()) or "(none)"
        raise UsageError(f"no lock named {key}", hint=f"held locks: {known}")
    click.echo(f"unlocked {key} (was held by run {holder.run_id}, pid {holder.pid} on "
               f"{holder.host}); recorded in the audit log")


@click.group()
def audit() -> None:
    """The hash-chained audit log."""


@audit.command("verify")
@store_option
@click.option("--head", metavar="HASH",
              help="A chain head printed earlier (by a run summary or this command; at least "
                   "12 hex digits): the log must still hold it, so cut-off entries are found.")
def audit_verify(store_url: str | None, head: str | None) -> None:
    """Check that no audit entry or stage result was edited, deleted, swapped or duplicated."""
    from iacorch.store.audit import expected_head

    if head is not None:
        try:
            head = expected_head(head)
        except ValueError as exc:
            raise UsageError(str(exc), hint="the run summary prints it as `audit chain head: "
                                            "HASH (seq N)`") from exc
    result = open_store(store_url).verify_audit(head=head)
    if result.ok:
        since = ""
        if result.head_seen_at is not None:
            since = (f"; {head} is seq {result.head_seen_at}, "
                     f"{result.checked - result.head_seen_at} entries since")
        click.echo(f"audit log intact: {result.checked} entries, head {result.head_hash}{since}")
        return
    where = f" at entry {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    click.echo(f"audit log BROKEN{where}: {result.reason} ({result.checked} entries checked)",
               err=True)
    for problem in result.stage_problems[:_PROBLEMS_SHOWN]:
        click.echo(f"  {problem}", err=True)
    if len(result.stage_problems) > _PROBLEMS_SHOWN:
        click.echo(f"  ... and {len(result.stage_problems) - _PROBLEMS_SHOWN} more", err=True)
    raise click.exceptions.Exit(1)


_PAST = {"approve": "approved", "reject": "rejected"}


def _decide(decision: str, run_id: str, gate: str, comment: str | None,
            inputs: tuple[str, ...], store_url: str | None, policy_dir: str | None) -> None:
    from iacorch.engine.approvals import Decision
    from iacorch.engine.operations import decide_gate
    from iacorch.engine.runtime import current_identity
    from iacorch.runbook.variables import parse_var_flags

    identity = current_identity()
    run = decide_gate(open_store(store_url), run_id, gate,
                      Decision(identity, Choice(decision), comment, parse_var_flags(inputs)),
                      time.time(), load_guard(policy_dir))
    click.echo(f"{identity} {_PAST[decision]} {gate} of run {run.id}")


def _decision_command(decision: str) -> click.Command:
    @click.command(decision)
    @click.argument("run_id", metavar="RUN")
    @click.argument("gate")
    @click.option("--comment", help="Recorded with the decision.")
    @click.option("--input", "inputs", multiple=True, metavar="NAME=VALUE",
                  help="An answer the gate asks for (approve only).")
    @click.option("--resume", "then_resume", is_flag=True, help="Resume the run right after.")
    @click.option("--json", "json_events", is_flag=True, help="With --resume: JSON events.")
    @click.option("--quiet", "-q", is_flag=True, help="With --resume: no tool output.")
    @store_option
    @policy_option
    def command(run_id: str, gate: str, comment: str | None, inputs: tuple[str, ...],
                then_resume: bool, json_events: bool, quiet: bool,
                store_url: str | None, policy_dir: str | None) -> None:
        _decide(decision, run_id, gate, comment, inputs, store_url, policy_dir)
        if then_resume:
            from iacorch.cli.run_commands import resume_existing

            resume_existing(run_id, store_url, json_events=json_events, quiet=quiet,
                            policy_dir=policy_dir)

    command.help = ("Approve a gate a run is waiting at (identity: $IACORCH_USER or login)."
                    if decision == "approve" else "Reject a gate: the run fails at it.")
    return command


COMMANDS = [runs, show, logs, unlock, audit, _decision_command("approve"),
            _decision_command("reject")]
