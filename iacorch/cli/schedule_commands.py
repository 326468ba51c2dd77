"""`iacorch schedule run | list | once | export`: the runbooks' `schedules:`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from iacorch.cli.run_commands import _duration
from iacorch.cli.session import command_logger, open_store, store_option
from iacorch.engine.launch import make_state_dir, state_dir_for

if TYPE_CHECKING:
    from iacorch.engine.runtime import Runtime
    from iacorch.schedule.jobs import Job

_OK_CODES = (0, 2, 3, 5, 130, 143)   # in sync, drift, waiting, locked, interrupted


@click.group()
def schedule() -> None:
    """Run, list, try and export the runbooks' `schedules:` (cron jobs)."""


def _runtime(store_url: str | None, runbook: str) -> tuple[Runtime, str]:
    """The scheduler's runtime and the store its jobs use: one store for all of them,
    `--store` or the first runbook's project's, whatever the jobs' own directories."""
    from iacorch.engine.runtime import Runtime
    from iacorch.store import STATE_FILE

    state_dir = make_state_dir(state_dir_for(store_url, Path(runbook)))
    store_url = store_url or str(state_dir / STATE_FILE)
    return Runtime(store=open_store(store_url), state_dir=state_dir), store_url


def _notify_failure(runtime: Runtime, log: Any, job: Job, code: int | None,
                    run_id: str | None, tail: list[str], log_path: Path | str) -> None:
    """Tell the schedule's channels (those that want `schedule_failed`) a job failed."""
    from iacorch.engine.notify import notifier_for
    from iacorch.engine.notify_events import schedule_failed

    if job.plan.runbook is None or not job.plan.runbook.notify:
        return
    try:
        notifier = notifier_for(job.plan, runtime, log=log)
        notifier.send(schedule_failed(
            runbook=job.runbook, workspace=job.workspace, schedule=job.name,
            action=job.schedule.action, exit_code=code, run_id=run_id, log_tail=tail,
            log_path=str(log_path)), job.schedule.notify)
    except Exception as exc:  # noqa: BLE001 - a notification never stops the scheduler
        log(f"notify: schedule_failed not sent: {exc}")


@schedule.command("run")
@click.argument("runbooks", nargs=-1, required=True, metavar="RUNBOOK...")
@click.option("--stop-timeout", callback=_duration, default="30s", show_default=True,
              metavar="DURATION", help="On SIGTERM, how long running jobs get to stop.")
@store_option
def run_scheduler(runbooks: tuple[str, ...], stop_timeout: float,
                  store_url: str | None) -> None:
    """Run every schedule of the runbooks in the foreground until SIGTERM or Ctrl-C."""
    from iacorch.errors import UsageError
    from iacorch.schedule.daemon import Scheduler
    from iacorch.schedule.jobs import load_jobs

    jobs = load_jobs(runbooks)
    if not jobs:
        raise UsageError(f"no `schedules:` in {', '.join(runbooks)}",
                         hint="add one, e.g. schedules: {nightly: {cron: '0 2 * * *', "
                              "action: drift}}")
    runtime, store_url = _runtime(store_url, runbooks[0])
    log = command_logger("iacorch.schedule")
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler = Scheduler(
        jobs, store=runtime.store, state_dir=runtime.state_dir, log=log,
        actor=runtime.identity, host=runtime.host, store_url=store_url,
        stop_grace=stop_timeout,
        on_failure=lambda *args: _notify_failure(runtime, log.info, *args))
    log.info("scheduler started (pid %d): %d job(s) from %s", os.getpid(), len(jobs),
             ", ".join(runbooks))
    runtime.store.append_audit("scheduler_started", actor=runtime.identity, data={
        "pid": runtime.pid, "host": runtime.host, "jobs": [j.key for j in jobs]})
    try:
        scheduler.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runtime.store.append_audit("scheduler_stopped", actor=runtime.identity,
                                   data={"pid": runtime.pid, "host": runtime.host})
        runtime.process.close()


@schedule.command("list")
@click.argument("runbooks", nargs=-1, required=True, metavar="RUNBOOK...")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100),
              help="How many next fire times to show per schedule.")
@click.option("--json", "as_json", is_flag=True)
def list_schedules(runbooks: tuple[str, ...], count: int, as_json: bool) -> None:
    """Each schedule with its next fire times, in its own zone and in UTC."""
    import time

    from iacorch.schedule.cron import next_fires, utc, zone_name
    from iacorch.schedule.jobs import load_jobs

    now = time.time()
    rows: list[dict[str, Any]] = []
    shown: list[list[str]] = []
    for job in load_jobs(runbooks):
        fires = next_fires(job.schedule.cron, job.zone, now, count)
        rows.append({"runbook": job.runbook, "path": str(job.runbook_path),
                     "workspace": job.workspace, "schedule": job.name,
                     "cron": job.schedule.cron, "timezone": zone_name(job.zone),
                     "action": job.schedule.action, "remediate": job.schedule.remediate,
                     "notify": list(job.schedule.notify),
                     "next": [{"local": f.isoformat(), "utc": utc(f).isoformat()}
                              for f in fires]})
        shown.append([f"{f:%Y-%m-%d %H:%M:%S} {f.tzname() or '':6} "
                      f"{utc(f):%Y-%m-%d %H:%M:%S} UTC" for f in fires])
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no schedules")
        return
    click.echo(f"{'RUNBOOK':16} {'SCHEDULE':18} {'ACTION':9} {'CRON':16} {'ZONE':16} "
               f"{'NEXT (ZONE)':26} NEXT (UTC)")
    for row, fires_text in zip(rows, shown, strict=True):
        action = row["action"] + ("+fix" if row["remediate"] else "")
        head = (f"{row['runbook'][:16]:16} {row['schedule'][:18]:18} {action:9} "
                f"{row['cron']:16} {row['timezone'][:16]:16}")
        for index, text in enumerate(fires_text):
            click.echo(f"{head if index == 0 else ' ' * len(head)} {text}")


@schedule.command("once")
@click.argument("name")
@click.argument("runbook")
@store_option
def run_once(name: str, runbook: str, store_url: str | None) -> None:
    """Run the job of schedule NAME now, in the foreground; exit with its exit code."""
    from iacorch.schedule.jobs import find_job, job_argv, job_env, load_jobs

    job = find_job(load_jobs([runbook]), name)
    runtime, store_url = _runtime(store_url, runbook)
    argv = job_argv(job, store_url=store_url)
    audit = {"schedule": job.name, "runbook": job.runbook, "workspace": job.workspace,
             "action": job.schedule.action, "manual": True}
    runtime.store.append_audit("schedule_job_started", actor=runtime.identity,
                               data={**audit, "argv": argv[1:]})
    click.echo(f"schedule {job.key}: {' '.join(argv[2:])}", err=True)
    proc = subprocess.Popen(argv, env={**os.environ, **job_env(job)})

    def forward(signum: int, _frame: object) -> None:
        if signum == signal.SIGTERM:    # a terminal Ctrl-C already reached the child
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    code = 128 - code if code < 0 else code
    runtime.store.append_audit("schedule_job_finished", actor=runtime.identity,
                               data={**audit, "exit_code": code})
    if code not in _OK_CODES:
        _notify_failure(runtime, lambda line: click.echo(f"  {line}", err=True), job, code,
                        None, [], "(terminal)")
    raise click.exceptions.Exit(code)


@schedule.command("export")
@click.argument("runbooks", nargs=-1, required=True, metavar="RUNBOOK...")
@click.option("--format", "fmt", type=click.Choice(["crontab", "github-actions"]),
              required=True)
@click.option("--base-dir", default=".", show_default=True,
              help="The directory the exported commands run in (paths are relative to it).")
@click.option("--program", default="iacorch", show_default=True,
              help="How the crontab invokes iacorch (e.g. /opt/iacorch/.venv/bin/iacorch).")
def export(runbooks: tuple[str, ...], fmt: str, base_dir: str, program: str) -> None:
    """Print the schedules as crontab lines or a GitHub Actions workflow."""
    from iacorch.schedule.export import crontab, github_actions
    from iacorch.schedule.jobs import load_jobs

    jobs = load_jobs(runbooks)
    base = str(Path(base_dir).resolve())
    click.echo(crontab(jobs, base_dir=base, program=program) if fmt == "crontab"
               else github_actions(jobs, base_dir=base), nl=False)


COMMANDS = [schedule]
