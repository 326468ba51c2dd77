"""`iacorch schedule` through the real CLI: a per-second cron fires, records, skips a locked
job, survives a failing one, stops on SIGTERM within seconds; list, once and export."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from iacorch.store import open_store
from iacorch.store.base import acquire_lock

pytestmark = pytest.mark.integration

STOP_WITHIN = 5.0      # seconds from SIGTERM to a clean exit, with a job running

RUNBOOK = """
version: 1
name: ticker
vars:
  pause: {default: 0, type: int}
stages:
  tick:
    kind: provision
    shell: {run: "echo tick >> ticks.txt; sleep {{ vars.pause }}"}
schedules:
  every-second: {cron: "* * * * * *", action: apply, vars: VARS}
notify:
  script: {command: ["sh", "-c", "cat >> events.jsonl; echo >> events.jsonl"],
           on: [schedule_failed]}
"""


def write_runbook(project, *, pause: int = 0, fail: bool = False) -> None:
    text = RUNBOOK.replace("VARS", f"{{pause: {pause}}}")
    if fail:
        text = text.replace('"echo tick', '"echo boom >&2; exit 3; echo tick')
    project.write("ticker.yaml", text)


def audit(project, kind: str) -> list[Any]:
    store = open_store(str(project.root / ".iacorch" / "state.db"))
    try:
        return [e for e in store.audit_entries() if e.kind == kind]
    finally:
        store.close()


def wait_for(check: Callable[[], bool], timeout: float, what: str,
             proc: subprocess.Popen[str]) -> None:
    """Poll `check`; on timeout, stop the scheduler and fail with its log."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline or proc.poll() is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"no {what} after {timeout:.0f}s; scheduler log:\n{out}")
        time.sleep(0.2)


@pytest.fixture
def scheduler(project) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start(*runbooks: str) -> subprocess.Popen[str]:
        proc = project.start("schedule", "run", *runbooks)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop(proc: subprocess.Popen[str]) -> tuple[int, float, str]:
    """SIGTERM the scheduler; its exit code, how long it took, and its log."""
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, time.monotonic() - began, out


def test_a_per_second_schedule_runs_twice_and_records_both(project, scheduler):
    write_runbook(project)
    proc = scheduler("ticker.yaml")
    wait_for(lambda: len([e for e in audit(project, "schedule_job_finished")
                          if e.data["outcome"] == "succeeded"]) >= 2, 30, "two finished jobs", proc)
    code, took, log = stop(proc)
    assert code == 0 and took < STOP_WITHIN, log
    finished = [e for e in audit(project, "schedule_job_finished")
                if e.data["outcome"] == "succeeded"]
    runs = [r for r in project.runs() if r["status"] == "succeeded"]
    assert {e.data["run"] for e in finished} <= {r["id"] for r in runs}
    assert len(runs) >= 2 and len((project.root / "ticks.txt").read_text().split()) >= 2
    assert all(e.data["schedule"] == "every-second" for e in finished)
    assert "ticker/default/every-second: started pid" in log and log.rstrip().endswith("stopped")


def test_a_job_whose_lock_is_held_is_skipped_and_recorded(project, scheduler):
    write_runbook(project)
    (project.root / ".iacorch").mkdir()
    store = open_store(str(project.root / ".iacorch" / "state.db"))
    acquire_lock(store, "ticker/default", "held-by-the-test", host=socket.gethostname(),
                       pid=os.getpid(), lease_seconds=300)
    store.close()
    proc = scheduler("ticker.yaml")
    wait_for(lambda: len(audit(project, "schedule_job_skipped")) >= 2, 20, "two skips", proc)
    code, _, log = stop(proc)
    assert code == 0, log
    skipped = audit(project, "schedule_job_skipped")
    assert "locked by run held-by-the-test" in skipped[0].data["reason"]
    assert audit(project, "schedule_job_started") == [] and project.runs() == []
    assert "skipped: ticker/default is locked by run held-by-the-test" in log


def test_sigterm_stops_the_scheduler_and_its_running_job_within_seconds(project, scheduler):
    write_runbook(project, pause=60)
    proc = scheduler("ticker.yaml")
    wait_for(lambda: any(r["status"] == "running" for r in project.runs()), 30,
             "running job", proc)
    code, took, log = stop(proc)
    assert code == 0 and took < STOP_WITHIN, log
    [run] = project.runs()
    assert run["status"] == "interrupted"            # resumable, like any interrupted run
    [finished] = audit(project, "schedule_job_finished")
    assert finished.data["exit_code"] == 143 and finished.data["outcome"] == "interrupted"


def test_a_failing_job_is_notified_and_the_scheduler_goes_on(project, scheduler):
    write_runbook(project, fail=True)
    proc = scheduler("ticker.yaml")
    wait_for(lambda: len(audit(project, "schedule_job_finished")) >= 2, 30, "two failures",
             proc)
    assert proc.poll() is None
    code, _, log = stop(proc)
    assert code == 0 and "FAILED" in log and "boom" in log, log
    events = [json.loads(line) for line in
              (project.root / "events.jsonl").read_text().splitlines() if line.strip()]
    assert len(events) >= 2 and events[0]["event"] == "schedule_failed", log
    assert events[0]["exit_code"] == 1 and events[0]["schedule"] == "every-second"
    assert any("boom" in line for line in events[0]["log_tail"])


def test_list_once_and_export(project):
    write_runbook(project)
    project.write("nightly.yaml", """
        version: 1
        name: nightly
        stages:
          net: {kind: provision, shell: {run: "true"}}
        schedules:
          drift-check: {cron: "0 2 * * *", timezone: Europe/Paris, action: drift,
                        remediate: true}
        """)
    listed = project.run("schedule", "list", "nightly.yaml", "ticker.yaml", "--json",
                         "--count", "2")
    assert listed.code == 0, listed.text
    rows = {r["schedule"]: r for r in json.loads(listed.out)}
    nightly = rows["drift-check"]["next"][0]
    assert nightly["local"].endswith(("T02:00:00+01:00", "T02:00:00+02:00"))
    assert nightly["utc"][11:19] in ("00:00:00", "01:00:00")
    assert len(rows["every-second"]["next"]) == 2
    text = project.run("schedule", "list", "nightly.yaml").out
    assert "Europe/Paris" in text and "02:00:00 CE" in text and "UTC" in text

    once = project.run("schedule", "once", "every-second", "ticker.yaml")
    assert once.code == 0, once.text
    assert [r["status"] for r in project.runs()] == ["succeeded"]
    assert project.run("schedule", "once", "nope", "ticker.yaml").code == 64

    cron = project.run("schedule", "export", "--format", "crontab", "nightly.yaml")
    assert "CRON_TZ=Europe/Paris\n0 2 * * * cd " in cron.out
    assert "iacorch drift nightly.yaml --remediate" in cron.out
    actions = project.run("schedule", "export", "--format", "github-actions", "nightly.yaml")
    assert actions.code == 0 and "schedule:\n    - cron: '0 " in actions.out
    assert project.run("schedule", "list", "missing.yaml").code == 64
