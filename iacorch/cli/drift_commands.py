"""`iacorch drift`: compare reality with the code, record it, notify, maybe remediate."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import click

from iacorch.cli.compile_commands import compile_plan, var_options
from iacorch.cli.run_commands import _duration
from iacorch.cli.session import (
    build_runtime,
    close_sinks,
    exit_code_for,
    forward_interrupts,
    print_summary,
    store_option,
)
from iacorch.model.status import RunStatus

if TYPE_CHECKING:
    from iacorch.engine.drift import DriftReport
    from iacorch.engine.drift_rules import StageHistory
    from iacorch.engine.runtime import Runtime
    from iacorch.model.plan import Plan
    from iacorch.store.base import Store


@click.command()
@click.argument("runbook")
@click.option("--stage", "stages", multiple=True, metavar="STAGE",
              help="Check only this stage (repeatable; a for_each base id takes all items).")
@click.option("--remediate", is_flag=True,
              help="Then apply the drifted stages (`apply --target`), approval gates as usual.")
@click.option("--lock-timeout", callback=_duration, metavar="DURATION",
              help="Wait this long for a run of the same runbook to finish.")
@click.option("--json", "json_events", is_flag=True,
              help="One JSON event per line; the last one is the `drift_report`.")
@click.option("--quiet", "-q", is_flag=True, help="Do not print tool output.")
@click.option("--report", "reports", multiple=True, metavar="FILE",
              help="Write a report: *.xml is JUnit (drift = failure), *.json the drift report.")
@click.option("--summary", metavar="FILE",
              help="Write a Markdown summary ($GITHUB_STEP_SUMMARY when set).")
@var_options
@store_option
def drift(runbook: str, stages: tuple[str, ...], remediate: bool, lock_timeout: float,
          json_events: bool, quiet: bool, reports: tuple[str, ...], summary: str | None,
          var_flags: tuple[str, ...], var_files: tuple[str, ...],
          store_url: str | None) -> None:
    """Compare every provision and configure stage with reality, using the inputs of the
    last successful apply. Exit 0 in sync, 2 drift, 1 the check failed."""
    from iacorch.cli.notifications import send
    from iacorch.drift_report import check_report_names, console_lines, write_reports
    from iacorch.engine.drift import check_drift, stages_to_check
    from iacorch.engine.drift_rules import exit_code
    from iacorch.engine.notify_events import drift_notifications
    from iacorch.engine.runs import new_run_id

    plan = compile_plan(runbook, var_flags, var_files)
    check_report_names(reports)
    stages_to_check(plan, stages)
    runtime = build_runtime(store_url, json_events=json_events, plan=plan, quiet=quiet,
                            live_view=False)
    run_id = new_run_id(runtime.clock())
    if not json_events:
        click.echo(f"drift {run_id}: checking {runbook} (workspace {plan.workspace}) against "
                   "the inputs of its last successful apply", err=True)
    try:
        with forward_interrupts(runtime):
            report = check_drift(plan, runtime, run_id=run_id, selection=stages,
                                 lock_timeout=lock_timeout)
        write_reports(report, reports, summary)
        if json_events:
            click.echo(json.dumps({"event": "drift_report", **report.to_dict()},
                                  sort_keys=True, default=str))
        else:
            click.echo("\n".join(console_lines(report, runbook)))
        if report.interrupted:
            raise click.exceptions.Exit(exit_code_for(RunStatus.INTERRUPTED,
                                                      runtime.interrupt_signal))
        send(plan, runtime, drift_notifications(report))
        code = exit_code(report.stages)
        if remediate and report.drifted:
            applied = _remediate(plan, runtime, report, lock_timeout)
            code = 1 if code == 1 else applied
    finally:
        close_sinks(runtime)
    raise click.exceptions.Exit(code)


def _remediate(plan: Plan, runtime: Runtime, report: DriftReport, lock_timeout: float) -> int:
    """`iacorch apply --target` the drifted stages and the applied provision/configure stages
    downstream of them, through the normal apply path; its exit code."""
    from iacorch.cli.notifications import run_end_sink
    from iacorch.engine.drift import last_applications
    from iacorch.engine.drift_rules import remediation_targets
    from iacorch.engine.run_state import RunOptions
    from iacorch.engine.runs import new_run_id, start_run
    from iacorch.model.status import Operation

    targets = remediation_targets(plan, report.drifted, last_applications(runtime.store, plan))
    downstream = [t for t in targets if t not in report.drifted]
    run_id = new_run_id(runtime.clock())
    click.echo(f"run {run_id}: remediating {', '.join(report.drifted)} (apply --target"
               f"{'; downstream: ' + ', '.join(downstream) if downstream else ''}) "
               f"after drift check {report.run_id}", err=True)
    runtime.store.append_audit("drift_remediation", run_id=run_id, actor=runtime.identity,
                               data={"drift_run": report.run_id, "drifted": report.drifted,
                                     "targets": list(targets)})
    run_end_sink(plan, runtime)
    with forward_interrupts(runtime):
        outcome = start_run(plan, runtime, RunOptions(operation=Operation.APPLY,
                                                      targets=targets),
                            lock_timeout=lock_timeout, run_id=run_id)
    print_summary(outcome, runtime)
    return exit_code_for(outcome.status, runtime.interrupt_signal)


def drift_history(store: Store, runbook: str, workspace: str) -> list[StageHistory]:
    """Per stage of a runbook+workspace: last verdict, last drift, in sync since."""
    from iacorch.engine.drift_rules import stage_history

    by_stage: dict[str, list[object]] = {}
    for record in store.drift_history(runbook, limit=500):
        if record.workspace == workspace:
            by_stage.setdefault(record.stage_id, []).append(record)
    found = [stage_history(records) for records in by_stage.values()]
    return sorted((h for h in found if h is not None), key=lambda h: h.stage_id)


COMMANDS = [drift]


def drift_run_line(run_details: Mapping[str, Any]) -> str | None:
    """`runs --kind drift`: one indented line naming what a drift run found, if anything."""
    summary = run_details.get("drift") or {}
    parts = [f"{label}: {', '.join(summary[key])}" for key, label in
             (("drifted", "drifted"), ("errors", "errors")) if summary.get(key)]
    return f"    {'; '.join(parts)}" if parts else None


def history_report(store: Store, runbook: str, workspace: str) -> list[dict[str, Any]]:
    """`show --json`: the runbook's drift history per stage."""
    return [dataclasses.asdict(item) for item in drift_history(store, runbook, workspace)]


def history_text(store: Store, runbook: str, workspace: str) -> list[str]:
    """`show`: a `drift history` block, or nothing when the runbook was never checked."""
    from datetime import datetime

    from iacorch.drift_report import history_lines

    found = drift_history(store, runbook, workspace)
    if not found:
        return []

    def when(stamp: float) -> str:
        return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S")

    return ["  drift history:", *history_lines(found, when)]
