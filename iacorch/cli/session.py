"""Building a Runtime for a command, and turning run outcomes into exit codes."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from iacorch.engine.rollback import NOTHING_TO_UNDO_CHECK
from iacorch.errors import ExitCode
from iacorch.model.status import Operation, RunStatus, StageStatus

if TYPE_CHECKING:
    from iacorch.engine.run_state import RunOutcome
    from iacorch.engine.runtime import Runtime
    from iacorch.model.plan import Plan
    from iacorch.policy.guard import PolicyGuard
    from iacorch.store.base import Store

# The one table of run outcomes -> exit codes (DESIGN.md §4).
RUN_EXIT_CODES: dict[RunStatus, ExitCode] = {
    RunStatus.SUCCEEDED: ExitCode.SUCCESS,
    RunStatus.FAILED: ExitCode.RUN_FAILED,
    RunStatus.ROLLED_BACK: ExitCode.RUN_FAILED,
    RunStatus.WAITING_APPROVAL: ExitCode.WAITING_APPROVAL,
    RunStatus.ROLLBACK_FAILED: ExitCode.ROLLBACK_FAILED,
    RunStatus.ROLLING_BACK: ExitCode.ROLLBACK_FAILED,
    RunStatus.INTERRUPTED: ExitCode.INTERRUPTED,
    RunStatus.DIED: ExitCode.RUN_FAILED,
}
_KILL_WINDOW = 3.0
BROKER_VARIABLE = "IACORCH_BROKER"   # stages with `pool:` go to workers through it
# undo notes that say "by design" rather than "needs a human": not worth a summary line
_NOTHING_TO_UNDO = ("approval gate", "`rollback: none`", NOTHING_TO_UNDO_CHECK)


def exit_code_for(status: RunStatus, interrupt_signal: int | None) -> ExitCode:
    """The exit code of a run that ended with `status`."""
    if status is RunStatus.INTERRUPTED and interrupt_signal == signal.SIGTERM:
        return ExitCode.TERMINATED
    return RUN_EXIT_CODES[status]


F = TypeVar("F", bound=Callable[..., Any])


def store_option(command: F) -> F:
    """--store, shared by every command that reads or writes the state store."""
    return click.option("--store", "store_url", metavar="URL", envvar="IACORCH_STORE",
                        help="State store: a path to state.db, sqlite:///path, "
                             "postgresql://user@host/db (shared by hosts) or memory://. "
                             "Default: .iacorch/state.db (or $IACORCH_HOME).")(command)


def open_store(store_url: str | None, runbook: Path | None = None) -> Store:
    """The store of `--store`, else of the runbook's project (or the current directory's)."""
    from iacorch.store import open_store as open_any

    return open_any(store_url, runbook)


def build_runtime(store_url: str | None, *, json_events: bool, plan: Plan | None,
                  quiet: bool = False, live_view: bool = True,
                  policy: PolicyGuard | None = None) -> Runtime:
    """The Runtime for a run command: store, console sinks, TTY detection, policy."""
    from iacorch.cli.prompt import terminal_prompt
    from iacorch.console import JsonConsole, LiveConsole, PlainConsole
    from iacorch.engine.launch import open_for_runs
    from iacorch.engine.runtime import Runtime

    runbook = plan.path if plan is not None else None
    store, state_dir = open_for_runs(store_url, runbook)
    runtime = Runtime(store=store, state_dir=state_dir, policy=policy)
    runtime.interactive = sys.stdin.isatty() and sys.stdout.isatty()
    def interrupted() -> bool:
        return runtime.cancel.interrupted

    if json_events:
        runtime.sinks.append(JsonConsole())
    elif runtime.interactive and plan is not None and live_view \
            and os.environ.get("TERM") != "dumb":
        live = LiveConsole([*plan.stages, *plan.finally_stages])
        runtime.sinks.append(live)
        runtime.prompt = terminal_prompt(live.pause, live.resume, interrupted)
    else:
        runtime.sinks.append(PlainConsole(show_logs=not quiet))
        if runtime.interactive:
            runtime.prompt = terminal_prompt(lambda: None, lambda: None, interrupted)
    broker = os.environ.get(BROKER_VARIABLE)
    if broker and plan is not None:
        from iacorch.workers.executor import celery_executor, pooled_stages

        if pooled_stages(plan):
            runtime.executor = celery_executor(plan, runtime.executor, store, runtime.cancel,
                                               broker, runtime.emit)
    return runtime


def command_logger(name: str) -> logging.Logger:
    """The log of a long-running command (`schedule run`, `listen`): time-stamped lines on
    stderr, for a terminal, journald or a container's log."""
    log = logging.getLogger(name)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s",
                                               datefmt="%Y-%m-%dT%H:%M:%S%z"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    return log


def close_sinks(runtime: Runtime) -> None:
    for sink in runtime.sinks:
        close = getattr(sink, "close", None)
        if close is not None:
            close()


@contextmanager
def forward_interrupts(runtime: Runtime) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop starting stages and pass one SIGINT to each child.

    A second Ctrl-C is not forwarded (it would make Terraform abandon its state);
    a third within a few seconds kills the children, with possible data loss.
    """
    presses: list[float] = []

    def handler(signum: int, _frame: object) -> None:
        now = time.monotonic()
        if runtime.interrupt_signal is None:
            runtime.interrupt_signal = signum
            runtime.cancel.interrupt()
            click.echo("\ninterrupt: stopping; running stages received one SIGINT and may "
                       "take a moment to clean up (Ctrl-C twice more to kill them)", err=True)
            presses.append(now)
            return
        presses.append(now)
        recent = [t for t in presses if now - t <= _KILL_WINDOW]
        if len(recent) >= 3:
            runtime.cancel.kill()
            click.echo("killing running stages now: their tools may leave state behind "
                       "(check Terraform locks with `terraform force-unlock`)", err=True)
        else:
            click.echo("still stopping; press Ctrl-C again to kill (possible data loss)",
                       err=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def print_summary(outcome: RunOutcome, runtime: Runtime) -> None:
    """The closing lines of a run: what happened and what to do next."""
    counts: dict[str, int] = {}
    for status in outcome.statuses.values():
        counts[status.value] = counts.get(status.value, 0) + 1
    shown = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    deadline = ""
    if outcome.deadline:
        verdict = "within" if outcome.elapsed <= outcome.deadline else "OVER"
        deadline = f" ({verdict} the deadline of {outcome.deadline:.0f}s)"
    click.echo(f"run {outcome.run_id} {outcome.status.value} in {outcome.elapsed:.1f}s"
               f"{deadline}: {shown or 'nothing to do'}", err=True)
    records = runtime.store.stage_records(outcome.run_id) if outcome.errors else {}
    for stage_id, error in outcome.errors.items():
        if outcome.statuses.get(stage_id) in (StageStatus.FAILED, StageStatus.INTERRUPTED):
            click.echo(f"  {stage_id}: {error}", err=True)
            hint = records[stage_id].details.get("hint") if stage_id in records else None
            if hint:
                click.echo(f"    hint: {hint}", err=True)
            click.echo(f"    log: iacorch logs {outcome.run_id} {stage_id}", err=True)
    for stage_id, warning in outcome.warnings.items():
        click.echo(f"  {stage_id}: warning: {warning}", err=True)
        click.echo("    hint: free disk space and inodes there (df -h; df -i)", err=True)
    if outcome.undo is not None:
        undo = outcome.undo
        if undo.undone:
            click.echo(f"  undone: {', '.join(undo.undone)}", err=True)
        for stage_id, error in undo.failed.items():
            click.echo(f"  undo FAILED: {stage_id}: {error}", err=True)
        for stage_id, why in undo.not_undone.items():
            if why not in _NOTHING_TO_UNDO:
                click.echo(f"  not undone: {stage_id} ({why})", err=True)
        if undo.failed:
            operation = runtime.store.get_run(outcome.run_id).operation
            _say_way_out(outcome.run_id, list(undo.failed),
                         destroying=operation == Operation.DESTROY.value)
    if outcome.status is RunStatus.WAITING_APPROVAL:
        for gate in outcome.waiting_gates:
            click.echo(f"  waiting for approval at `{gate}`:\n"
                       f"    iacorch approve {outcome.run_id} {gate} --resume\n"
                       f"    iacorch reject {outcome.run_id} {gate}", err=True)
    elif outcome.status in (RunStatus.FAILED, RunStatus.INTERRUPTED) and outcome.undo is None:
        click.echo(f"  resume with: iacorch resume {outcome.run_id}", err=True)
    head = runtime.store.audit_head(run_id=outcome.run_id)
    if head is not None:
        click.echo(f"  audit chain head: {head.hash[:16]} (seq {head.seq})", err=True)


def _say_way_out(run_id: str, failed: list[str], *, destroying: bool) -> None:
    """What to do after an undo failed: the ways out of `rollback_failed` (docs/runbook.md)."""
    if destroying:  # what went down stays down
        click.echo("  fix the cause, then run the same `iacorch destroy` again", err=True)
        return
    skips = " ".join(f"--skip {stage_id}" for stage_id in failed)
    click.echo(f"  fix the cause, then continue with: iacorch rollback {run_id}\n"
               "  or, when the cause is in the runbook (an edited runbook cannot continue "
               "this run) or cannot be fixed,\n"
               f"  undo {', '.join(failed)} by hand (or check there is nothing to undo), then:\n"
               f"    iacorch rollback {run_id} {skips} --reason \"what you did\"", err=True)
