"""The foreground scheduler behind `iacorch schedule run`: fit for systemd or a container.

Each due job runs in a process of its own (its output in a log file per run). A job
whose previous run still runs, or whose runbook lock another live run holds, is
skipped, and the skip is audited. A failing job is logged, audited and notified; the
scheduler goes on. After downtime a job that missed fire times runs once, not once per
missed time. A stop request (SIGTERM, SIGINT) passes SIGTERM to running jobs, which
stop like an interrupted run (resumable), and ends the loop within their grace period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from iacorch.store.base import Store, lock_verdict

from .jobs import Job, job_argv, job_env

STATE_FILE = "schedule-state.json"
_OUTCOMES = {0: "succeeded", 2: "drift_or_changes", 3: "waiting_approval", 5: "locked",
             130: "interrupted", 143: "interrupted"}
_FINE = (0, 2, 3)            # not a failure of the job: in sync / drift found / gate waiting
_IDLE_WAKE = 30.0            # the loop wakes at least this often, even with nothing due
_BUSY_WAKE = 0.2             # ... and this often while a job runs, to reap it promptly
_TAIL = 10


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen[bytes]
    log_path: Path
    log_file: IO[bytes]
    scheduled_for: float
    started: float


class Scheduler:
    """Fires jobs at their cron times until `stop` is set."""

    def __init__(self, jobs: Sequence[Job], *, store: Store, state_dir: Path,
                 log: logging.Logger, actor: str, host: str, store_url: str | None = None,
                 stop_grace: float = 30.0, clock: Callable[[], float] = time.time,
                 on_failure: Callable[[Job, int | None, str | None, list[str], Path], None]
                 = lambda *args: None) -> None:
        self.jobs = list(jobs)
        self.store, self.state_dir, self.log = store, state_dir, log
        self.actor, self.host, self.store_url = actor, host, store_url
        self.stop_grace, self.clock, self.on_failure = stop_grace, clock, on_failure
        self.state_path = state_dir / STATE_FILE
        self.running: dict[str, _Running] = {}
        self.next_at: dict[str, float] = {}

    # -- the loop ------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Fire due jobs until `stop` is set, then stop the running ones."""
        now = self.clock()
        last_fired = self._load_state()
        for job in self.jobs:
            missed = last_fired.get(job.key)
            if missed is not None and job.next_fire(missed) <= now:
                self.log.info("%s: missed fire time %s while the scheduler was down; "
                              "catching up once", job.key, _when(job.next_fire(missed)))
                self._fire(job, job.next_fire(missed), catch_up=True)
            self.next_at[job.key] = job.next_fire(now)
            self.log.info("%s: %s %s (%s), next at %s", job.key, job.schedule.action,
                          job.runbook_path.name, job.schedule.cron,
                          _when(self.next_at[job.key]))
        while not stop.is_set():
            self._reap()
            now = self.clock()
            for job in self.jobs:
                if self.next_at[job.key] <= now:
                    self._fire(job, self.next_at[job.key], catch_up=False)
                    self.next_at[job.key] = job.next_fire(max(now, self.next_at[job.key]))
            soonest = min(self.next_at.values(), default=now + _IDLE_WAKE)
            wake = _BUSY_WAKE if self.running else _IDLE_WAKE
            stop.wait(max(0.01, min(wake, soonest - self.clock())))
        self._shutdown()

    # -- one fire --------------------------------------------------------------------
    def _fire(self, job: Job, scheduled_for: float, *, catch_up: bool) -> None:
        self._save_state(job.key, scheduled_for)
        why_not = self._why_skip(job)
        if why_not is not None:
            self.log.warning("%s: skipped: %s", job.key, why_not)
            self._audit("schedule_job_skipped", job, {"reason": why_not,
                                                      "scheduled_for": scheduled_for})
            return
        argv = job_argv(job, store_url=self.store_url)
        log_path = self._log_path(job)
        log_file = open(log_path, "ab")  # noqa: SIM115 - closed when the job is reaped
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log_file,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **job_env(job)})
        except OSError as exc:
            log_file.close()
            self.log.error("%s: could not start: %s", job.key, exc)
            self._audit("schedule_job_failed", job, {"error": str(exc)})
            self.on_failure(job, None, None, [str(exc)], log_path)
            return
        self.running[job.key] = _Running(job, proc, log_path, log_file, scheduled_for,
                                         self.clock())
        self.log.info("%s: started pid %d%s; log %s", job.key, proc.pid,
                      " (catch-up)" if catch_up else "", log_path)
        self._audit("schedule_job_started", job, {
            "pid": proc.pid, "scheduled_for": scheduled_for, "catch_up": catch_up,
            "argv": argv[1:], "log": str(log_path)})

    def _why_skip(self, job: Job) -> str | None:
        previous = self.running.get(job.key)
        if previous is not None:
            return f"its previous run (pid {previous.proc.pid}) is still running"
        holder = next((h for h in self.store.list_locks() if h.key == job.lock_key), None)
        if holder is not None and lock_verdict(holder, run_id="", host=self.host, pid=-1,
                                               now=self.clock()) is None:
            return f"{job.lock_key} is locked by run {holder.run_id} (pid {holder.pid} " \
                   f"on {holder.host})"
        return None

    def _reap(self) -> None:
        for key, running in list(self.running.items()):
            code = running.proc.poll()
            if code is not None:
                del self.running[key]
                self._finished(running, code)

    def _finished(self, running: _Running, code: int) -> None:
        running.log_file.close()
        job = running.job
        if code < 0:                      # killed by a signal: report it as a shell would
            code = 128 - code
        tail = _tail(running.log_path)
        run_id = self._run_of(running)
        outcome = _OUTCOMES.get(code, "failed")
        elapsed = self.clock() - running.started
        data = {"exit_code": code, "outcome": outcome, "run": run_id,
                "elapsed": round(elapsed, 3), "log": str(running.log_path)}
        if code == 5:
            self.log.warning("%s: skipped: another run took the lock first (run %s)",
                             job.key, run_id or "?")
            self._audit("schedule_job_skipped", job, {**data, "reason": "locked"})
            return
        self._audit("schedule_job_finished", job, data)
        if code in _FINE or outcome == "interrupted":
            self.log.info("%s: finished in %.1fs: %s (exit %d%s)", job.key, elapsed, outcome,
                          code, f", run {run_id}" if run_id else "")
            return
        self.log.error("%s: FAILED in %.1fs with exit %d%s; last lines:\n  %s", job.key,
                       elapsed, code, f", run {run_id}" if run_id else "",
                       "\n  ".join(tail) or "(no output)")
        self.on_failure(job, code, run_id, tail, running.log_path)

    def _run_of(self, running: _Running) -> str | None:
        """The run the job's process recorded in the store (None if it made none)."""
        for run in self.store.list_runs(runbook=running.job.runbook, limit=20):
            if run.pid == running.proc.pid and run.host == self.host \
                    and run.started_at >= running.started - 1.0:
                return run.id
        return None

    def _shutdown(self) -> None:
        if not self.running:
            self.log.info("stopped")
            return
        self.log.info("stopping: asking %d running job(s) to stop (SIGTERM)",
                      len(self.running))
        for running in self.running.values():
            _signal_group(running.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        while self.running and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for running in self.running.values():
            self.log.warning("%s: still running after %.0fs; killing it", running.job.key,
                             self.stop_grace)
            _signal_group(running.proc, signal.SIGKILL)
            running.proc.wait()
        self._reap()
        self.log.info("stopped")

    # -- records -------------------------------------------------------------------
    def _audit(self, kind: str, job: Job, data: dict[str, Any]) -> None:
        try:
            self.store.append_audit(kind, actor=self.actor, data={
                "schedule": job.name, "runbook": job.runbook, "workspace": job.workspace,
                "action": job.schedule.action, **data})
        except Exception as exc:  # noqa: BLE001 - the scheduler outlives a store hiccup
            self.log.error("could not write the audit log: %s", exc)

    def _log_path(self, job: Job) -> Path:
        directory = self.state_dir / "schedules" / job.runbook / job.workspace / job.name
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(self.clock()).strftime("%Y%m%d-%H%M%S-%f")
        return directory / f"{stamp}.log"

    def _load_state(self) -> dict[str, float]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {k: float(v) for k, v in data.items() if isinstance(v, int | float)}

    def _save_state(self, key: str, fired: float) -> None:
        state = self._load_state()
        state[key] = fired
        temporary = self.state_path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(state, indent=1, sort_keys=True),
                                 encoding="utf-8")
            temporary.replace(self.state_path)
        except OSError as exc:
            self.log.error("could not save %s: %s", self.state_path, exc)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _tail(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    return [line for line in lines if line.strip()][-_TAIL:]


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")
