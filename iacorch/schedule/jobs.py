"""The jobs runbooks declare under `schedules:`, and the command line each one runs.

A job runs as `python -m iacorch <action> RUNBOOK --var ...` in a process of its own,
so a job that crashes, hangs or leaks cannot take the scheduler down, and it goes
through exactly the path (lock, journal, approvals, notifications) a person's run does.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.plan import Plan
from iacorch.model.runbook import Schedule

from . import cron

SCHEDULE_ENV = "IACORCH_SCHEDULE"
NOTIFY_ONLY_ENV = "IACORCH_NOTIFY_ONLY"


@dataclass(frozen=True)
class Job:
    """One schedule of one runbook, compiled with the schedule's vars."""

    name: str
    runbook_path: Path          # absolute
    schedule: Schedule
    plan: Plan
    zone: tzinfo

    @property
    def runbook(self) -> str:
        return self.plan.name

    @property
    def workspace(self) -> str:
        return self.plan.workspace

    @property
    def key(self) -> str:
        """Unique among the jobs of one scheduler: runbook name, workspace, schedule."""
        return f"{self.runbook}/{self.workspace}/{self.name}"

    @property
    def lock_key(self) -> str:
        """The lock a run of this job takes (engine.locks.lock_key)."""
        return f"{self.runbook}/{self.workspace}"

    def next_fire(self, after: float) -> float:
        return cron.next_fire(self.schedule.cron, self.zone, after)


def cli_vars(values: Mapping[str, Any]) -> dict[str, str]:
    """Schedule vars as `--var` text: strings as they are, anything else as JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def load_jobs(runbooks: Sequence[str]) -> list[Job]:
    """Every schedule of every runbook; UsageError for a bad cron or zone, naming it."""
    from iacorch.runbook.compiler import compile_runbook

    jobs: list[Job] = []
    for path in runbooks:
        if not Path(path).is_file():
            raise UsageError(f"{path}: no such file", hint="give the path of a runbook file")
        declared = compile_runbook(path)
        for name, schedule in declared.runbook.schedules.items():
            where = f"{path}: schedules.{name}"
            try:
                cron.check(schedule.cron)
                tz = cron.zone(schedule.timezone)
            except cron.CronProblem as exc:
                raise UsageError(f"{where}: {exc}") from None
            unknown = [c for c in schedule.notify if c not in declared.runbook.notify]
            if unknown:
                raise UsageError(f"{where}: notify channel `{unknown[0]}` is not declared",
                                 hint="declare it under `notify:` at the top of the runbook")
            plan = compile_runbook(path, cli_vars=cli_vars(schedule.vars)) \
                if schedule.vars else declared
            jobs.append(Job(name, Path(path).resolve(), schedule, plan, tz))
    keys = [job.key for job in jobs]
    duplicate = next((k for k in keys if keys.count(k) > 1), None)
    if duplicate is not None:
        raise UsageError(f"schedule {duplicate} is given twice",
                         hint="pass each runbook once")
    return jobs


def find_job(jobs: Sequence[Job], name: str) -> Job:
    """The job named `name`; UsageError listing the names otherwise."""
    for job in jobs:
        if job.name == name:
            return job
    raise UsageError(f"no schedule named `{name}`",
                     hint=f"schedules: {', '.join(j.name for j in jobs) or '(none)'}")


def job_args(job: Job, *, runbook_arg: str | None = None) -> list[str]:
    """The iacorch arguments of one run of this job (without the program)."""
    args = [job.schedule.action, runbook_arg or str(job.runbook_path)]
    for name, value in cli_vars(job.schedule.vars).items():
        args += ["--var", f"{name}={value}"]
    if job.schedule.action == "drift" and job.schedule.remediate:
        args.append("--remediate")
    return args


def job_argv(job: Job, *, store_url: str | None = None,
             python: str = sys.executable) -> list[str]:
    """The full command the scheduler starts for one run of this job."""
    argv = [python, "-m", "iacorch", *job_args(job)]
    if store_url:
        argv += ["--store", store_url]
    return argv


def job_env(job: Job) -> dict[str, str]:
    """What the child learns about its schedule: its name and the channels it notifies."""
    return {SCHEDULE_ENV: job.name, NOTIFY_ONLY_ENV: ",".join(job.schedule.notify)}
