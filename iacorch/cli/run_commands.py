"""Commands that run things: apply, plan, destroy, resume, approve, reject."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from iacorch.cli.compile_commands import F, compile_plan, var_options
from iacorch.cli.session import (
    build_runtime,
    close_sinks,
    exit_code_for,
    forward_interrupts,
    open_store,
    print_summary,
    store_option,
)
from iacorch.engine.launch import check_tools, state_dir_for
from iacorch.engine.operations import plan_of_run
from iacorch.errors import ExitCode, UsageError
from iacorch.model.fields import parse_duration
from iacorch.model.status import Operation, StageKind

if TYPE_CHECKING:
    from iacorch.engine.run_state import RunOutcome
    from iacorch.engine.runtime import Runtime
    from iacorch.model.plan import Plan
    from iacorch.store.base import RunRecord


def _duration(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float:
    if value is None:
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def run_options(command: F) -> F:
    options = [
        click.option("--only", multiple=True, type=click.Choice([k.value for k in StageKind]),
                     help="Run only stages of this kind (repeatable)."),
        click.option("--target", "targets", multiple=True, metavar="STAGE",
                     help="Run this stage and what it needs (repeatable)."),
        click.option("--concurrency", type=click.IntRange(1, 1024),
                     help="Stages running at once (overrides the runbook)."),
        click.option("--lock-timeout", callback=_duration, metavar="DURATION",
                     help="Wait this long for another run of the same runbook to finish."),
        click.option("--json", "json_events", is_flag=True,
                     help="Stream one JSON event per line instead of the console view."),
        click.option("--quiet", "-q", is_flag=True, help="Do not print tool output."),
        click.option("--report", "reports", multiple=True, metavar="FILE",
                     help="Write a report: *.xml is JUnit, *.json the JSON run report."),
        click.option("--summary", metavar="FILE",
                     help="Write a Markdown summary ($GITHUB_STEP_SUMMARY when set)."),
    ]
    for option in reversed(options):
        command = option(command)
    return var_options(store_option(command))


def _execute(operation: Operation, runbook: str, var_flags: tuple[str, ...],
             var_files: tuple[str, ...], store_url: str | None, only: tuple[str, ...],
             targets: tuple[str, ...], concurrency: int | None, lock_timeout: float,
             json_events: bool, quiet: bool, reports: tuple[str, ...],
             summary: str | None) -> None:
    from iacorch.engine.run_state import RunOptions
    from iacorch.engine.runs import new_run_id, start_run

    plan = compile_plan(runbook, var_flags, var_files)
    for target in targets:
        if target not in plan.stages and target not in plan.expansions:
            raise UsageError(f"--target {target}: no such stage in {runbook}",
                             hint=f"stages: {', '.join(plan.expansions)}")
    check_tools(plan)
    runtime = build_runtime(store_url, json_events=json_events, plan=plan, quiet=quiet)
    run_id = new_run_id(runtime.clock())
    if not json_events:
        click.echo(f"run {run_id}: {operation.value} {runbook} "
                   f"(workspace {plan.workspace}, plan {plan.plan_hash[:12]})", err=True)
    options = RunOptions(operation=operation, only=only, targets=targets,
                         concurrency=concurrency)
    _drive(runtime, plan, None,
           lambda: start_run(plan, runtime, options, lock_timeout=lock_timeout, run_id=run_id),
           reports, summary)


def write_and_summarise(runtime: Runtime, outcome: RunOutcome, reports: tuple[str, ...],
                        summary: str | None) -> None:
    from iacorch.report import write_reports

    write_reports(runtime.store, outcome.run_id, reports, summary)
    print_summary(outcome, runtime)


def _finish(runtime: Runtime, outcome: RunOutcome, reports: tuple[str, ...],
            summary: str | None) -> None:
    write_and_summarise(runtime, outcome, reports, summary)
    raise click.exceptions.Exit(exit_code_for(outcome.status, runtime.interrupt_signal))


def _drive(runtime: Runtime, plan: Plan, header: str | None, work: Callable[[], RunOutcome],
           reports: tuple[str, ...] = (), summary: str | None = None) -> None:
    """Run `work` with interrupts forwarded, then report and exit with the outcome's code."""
    from iacorch.cli.notifications import run_end_sink

    if header:
        click.echo(header, err=True)
    run_end_sink(plan, runtime)
    try:
        with forward_interrupts(runtime):
            outcome = work()
    finally:
        close_sinks(runtime)
    _finish(runtime, outcome, reports, summary)


def _existing(run_id: str, store_url: str | None, json_events: bool,
              quiet: bool) -> tuple[RunRecord, Plan, Runtime]:
    """A recorded run, the plan it was started with, and a runtime to continue it."""
    run = open_store(store_url).get_run(run_id)
    plan = plan_of_run(run)
    check_tools(plan)
    return run, plan, build_runtime(store_url, json_events=json_events, plan=plan, quiet=quiet)


@click.command()
@click.argument("runbook")
@run_options
def apply(**kwargs: object) -> None:
    """Run the runbook: every stage in dependency order, in parallel where possible."""
    _execute(Operation.APPLY, **kwargs)  # type: ignore[arg-type]


@click.command("plan")
@click.argument("runbook")
@run_options
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 2 when anything would change or a stage could not be fully "
                   "planned, 0 when nothing would change.")
@click.option("--mock", is_flag=True,
              help="Use stages' `mock_outputs` for outputs no run has produced yet. "
                   "A mocked plan is marked as such and can never be applied or approved.")
def plan_command(runbook: str, var_flags: tuple[str, ...], var_files: tuple[str, ...],
                 store_url: str | None, only: tuple[str, ...], targets: tuple[str, ...],
                 concurrency: int | None, lock_timeout: float, json_events: bool, quiet: bool,
                 reports: tuple[str, ...], summary: str | None, detailed_exitcode: bool,
                 mock: bool) -> None:
    """Dry run of every stage: terraform plan, pulumi preview, ansible check+diff;
    shell and http stages are shown as "would run". Nothing is changed."""
    from iacorch.engine.plan_report import has_pending_changes, plan_counts, stage_plans
    from iacorch.engine.run_state import RunOptions
    from iacorch.engine.runs import new_run_id, plan_run
    from iacorch.model.status import RunStatus

    plan = compile_plan(runbook, var_flags, var_files)
    check_tools(plan)
    runtime = build_runtime(store_url, json_events=json_events, plan=plan, quiet=quiet)
    run_id = new_run_id(runtime.clock())
    click.echo(f"run {run_id}: plan {runbook} (workspace {plan.workspace})", err=True)
    options = RunOptions(operation=Operation.PLAN, only=only, targets=targets,
                         concurrency=concurrency, mock=mock)
    try:
        with forward_interrupts(runtime):
            outcome = plan_run(plan, runtime, options, run_id=run_id)
    finally:
        close_sinks(runtime)
    plans = stage_plans(runtime.store.stage_records(run_id))
    for stage_id, stage_plan in plans.items():
        click.echo(f"  {stage_id}: {stage_plan.line}", err=True)
    click.echo(f"plan: {plan_counts(plans)}", err=True)
    if detailed_exitcode and outcome.status is RunStatus.SUCCEEDED and has_pending_changes(plans):
        write_and_summarise(runtime, outcome, reports, summary)
        raise click.exceptions.Exit(ExitCode.CHANGES_PRESENT)
    _finish(runtime, outcome, reports, summary)


@click.command()
@click.argument("run_id", metavar="RUN")
@store_option
@click.option("--rerun-interrupted", is_flag=True,
              help="Run again stages that stopped mid-way even if not idempotent.")
@click.option("--concurrency", type=click.IntRange(1, 1024))
@click.option("--lock-timeout", callback=_duration, metavar="DURATION")
@click.option("--json", "json_events", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--report", "reports", multiple=True, metavar="FILE")
@click.option("--summary", metavar="FILE")
def resume(run_id: str, store_url: str | None, rerun_interrupted: bool,
           concurrency: int | None, lock_timeout: float, json_events: bool, quiet: bool,
           reports: tuple[str, ...], summary: str | None) -> None:
    """Continue a failed, interrupted, suspended or killed run where it stopped."""
    resume_existing(run_id, store_url, json_events=json_events, quiet=quiet,
                    rerun_interrupted=rerun_interrupted, concurrency=concurrency,
                    lock_timeout=lock_timeout, reports=reports, summary=summary)


def resume_existing(run_id: str, store_url: str | None, *, json_events: bool, quiet: bool,
                    rerun_interrupted: bool = False, concurrency: int | None = None,
                    lock_timeout: float = 0.0, reports: tuple[str, ...] = (),
                    summary: str | None = None) -> None:
    """Resume a run and exit with its outcome's code (`resume`, `approve --resume`)."""
    from iacorch.engine.runs import resume_run

    run, plan, runtime = _existing(run_id, store_url, json_events, quiet)
    _drive(runtime, plan, f"run {run.id}: resuming {run.runbook_path}",
           lambda: resume_run(plan, run, runtime, rerun_interrupted=rerun_interrupted,
                              lock_timeout=lock_timeout, concurrency=concurrency),
           reports, summary)


@click.command()
@click.argument("runbook")
@var_options
@store_option
@click.option("--concurrency", type=click.IntRange(1, 1024))
@click.option("--lock-timeout", callback=_duration, metavar="DURATION")
@click.option("--json", "json_events", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def destroy(runbook: str, var_flags: tuple[str, ...], var_files: tuple[str, ...],
            store_url: str | None, concurrency: int | None, lock_timeout: float,
            json_events: bool, quiet: bool) -> None:
    """Take down what the runbook made: each stage by its `destroy:` (else `rollback:`) rule."""
    from iacorch.engine import runs

    plan = compile_plan(runbook, var_flags, var_files)
    check_tools(plan)
    runtime = build_runtime(store_url, json_events=json_events, plan=plan, quiet=quiet)
    run_id = runs.new_run_id(runtime.clock())
    _drive(runtime, plan, f"run {run_id}: destroy {runbook} (workspace {plan.workspace})",
           lambda: runs.destroy(plan, runtime, run_id=run_id, lock_timeout=lock_timeout,
                                concurrency=concurrency))


@click.command()
@click.argument("run_id", metavar="RUN")
@store_option
@click.option("--concurrency", type=click.IntRange(1, 1024))
@click.option("--json", "json_events", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@click.option("--skip", "skipped", multiple=True, metavar="STAGE",
              help="Do not undo this stage: you undid it by hand, or it has nothing to undo "
                   "(repeatable; audited; needs --reason).")
@click.option("--reason", default="", help="What was done by hand about the skipped stages.")
def rollback(run_id: str, store_url: str | None, concurrency: int | None, json_events: bool,
             quiet: bool, skipped: tuple[str, ...], reason: str) -> None:
    """Roll back a failed or finished run; run it again to continue a failed rollback."""
    from iacorch.engine import runs

    run, plan, runtime = _existing(run_id, store_url, json_events, quiet)
    _drive(runtime, plan, f"run {run.id}: rolling back {run.runbook_path}",
           lambda: runs.rollback_run(plan, run, runtime, concurrency=concurrency,
                                     skip=skipped, reason=reason))


@click.command()
@click.argument("run_id", metavar="RUN")
@click.option("--from", "from_stage", required=True, metavar="STAGE",
              help="Run this stage and everything downstream of it again.")
@store_option
@click.option("--concurrency", type=click.IntRange(1, 1024))
@click.option("--json", "json_events", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
def retry(run_id: str, from_stage: str, store_url: str | None, concurrency: int | None,
          json_events: bool, quiet: bool) -> None:
    """Re-run a stage and everything downstream of it, keeping the rest of the run."""
    from iacorch.engine import runs

    run, plan, runtime = _existing(run_id, store_url, json_events, quiet)
    chosen = runs.reset_from(plan, run, runtime, from_stage)
    _drive(runtime, plan, f"run {run.id}: running again {', '.join(chosen)}",
           lambda: runs.resume_run(plan, runtime.store.get_run(run.id), runtime,
                                   rerun_interrupted=True, concurrency=concurrency))


@click.command("mark-done")
@click.argument("run_id", metavar="RUN")
@click.argument("stage")
@click.option("--reason", required=True, help="What was done by hand (audited).")
@click.option("--output", "outputs", multiple=True, metavar="NAME=VALUE",
              help="An output downstream stages need (repeatable).")
@store_option
def mark_done(run_id: str, stage: str, reason: str, outputs: tuple[str, ...],
              store_url: str | None) -> None:
    """Record a stage as done by hand so the run can continue with `iacorch resume`."""
    from iacorch.engine import runs
    from iacorch.engine.runtime import Runtime
    from iacorch.runbook.variables import parse_var_flags

    store = open_store(store_url)
    run = store.get_run(run_id)
    plan = plan_of_run(run)
    runtime = Runtime(store=store, state_dir=state_dir_for(store_url))
    runs.mark_done(plan, run, runtime, stage, reason=reason, outputs=parse_var_flags(outputs))
    click.echo(f"{stage} of run {run.id} marked done by {runtime.identity}; continue with "
               f"`iacorch resume {run.id}`")


COMMANDS = [apply, plan_command, resume, destroy, rollback, retry, mark_done]
