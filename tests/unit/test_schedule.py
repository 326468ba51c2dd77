"""Schedules without processes or sleeps: cron math, jobs, exports, skip and catch-up rules."""

from __future__ import annotations

import json
import logging
import os
import socket
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from iacorch.errors import IacorchError, UsageError
from iacorch.schedule import cron
from iacorch.schedule.daemon import STATE_FILE, Scheduler
from iacorch.schedule.export import crontab, github_actions, utc_cron
from iacorch.schedule.jobs import find_job, job_argv, job_env, load_jobs
from iacorch.store.base import acquire_lock
from iacorch.store.memory import MemoryStore

PARIS = cron.zone("Europe/Paris")


def at(*args: int, tz=PARIS) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


@pytest.mark.parametrize(("expression", "after", "expected"), [
    ("0 2 * * *", at(2026, 11, 27, 12, 0), [datetime(2026, 11, 28, 2, 0, tzinfo=PARIS)]),
    # 02:30 does not exist on the spring-forward day: it runs at 03:00, then 02:30 again
    ("30 2 * * *", at(2026, 3, 28, 12, 0), [datetime(2026, 3, 29, 3, 0, tzinfo=PARIS),
                                            datetime(2026, 3, 30, 2, 30, tzinfo=PARIS)]),
    # six fields: seconds first
    ("*/10 * * * * *", at(2026, 1, 1, 0, 0, 5), [datetime(2026, 1, 1, 0, 0, 10, tzinfo=PARIS),
                                                 datetime(2026, 1, 1, 0, 0, 20, tzinfo=PARIS)]),
])
def test_next_fires_in_the_schedule_zone(expression, after, expected):
    assert cron.next_fires(expression, PARIS, after, len(expected)) == expected


def test_next_fire_is_strictly_after():
    moment = at(2026, 1, 1, 0, 0, 1)
    assert cron.next_fire("* * * * * *", PARIS, moment) == moment + 1
    assert cron.next_fire("* * * * * *", PARIS, moment + 0.5) == moment + 1


@pytest.mark.parametrize(("expression", "message"), [
    ("* * * *", "has 4 fields"),
    ("0 0 1 1 * 2030 *", "has 7 fields"),
    ("61 * * * *", "not a valid cron"),
    ("often", "has 1 fields"),
])
def test_bad_cron_expressions(expression, message):
    with pytest.raises(cron.CronProblem, match=message):
        cron.check(expression)


def test_zones():
    assert cron.zone_name(cron.zone("UTC")) == "UTC"
    with pytest.raises(cron.CronProblem, match="unknown time zone 'Mars/Olympus'"):
        cron.zone("Mars/Olympus")
    assert cron.local_zone().utcoffset(datetime.now()) is not None


RUNBOOK = """
version: 1
name: site
vars:
  env: {default: dev}
workspace: "{{ vars.env }}"
stages:
  net: {kind: provision, shell: {run: "true"}}
schedules:
  nightly-drift: {cron: "0 2 * * *", timezone: Europe/Paris, action: drift, notify: [ops],
                  remediate: true, vars: {env: prod}}
  hourly-plan: {cron: "5 * * * *", action: plan}
  tick: {cron: "* * * * * *", action: apply}
notify:
  ops: {command: "cat > /dev/null", on: [drift, schedule_failed]}
"""


@pytest.fixture
def runbook(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    path = tmp_path / "plans" / "site.yaml"
    path.parent.mkdir()
    path.write_text(textwrap.dedent(RUNBOOK))
    return path


def test_jobs_are_compiled_with_their_schedule_vars(runbook: Path):
    jobs = load_jobs([str(runbook)])
    assert [j.key for j in jobs] == ["site/prod/nightly-drift", "site/dev/hourly-plan",
                                     "site/dev/tick"]
    nightly = find_job(jobs, "nightly-drift")
    assert nightly.lock_key == "site/prod" and cron.zone_name(nightly.zone) == "Europe/Paris"
    assert job_argv(nightly, store_url="/s/state.db", python="py") == [
        "py", "-m", "iacorch", "drift", str(runbook.resolve()), "--var", "env=prod",
        "--remediate", "--store", "/s/state.db"]
    assert job_env(nightly) == {"IACORCH_SCHEDULE": "nightly-drift",
                                "IACORCH_NOTIFY_ONLY": "ops"}
    with pytest.raises(UsageError, match="no schedule named `weekly`"):
        find_job(jobs, "weekly")


@pytest.mark.parametrize(("replace", "message"), [
    ('cron: "0 2 * * *", timezone: Europe/Paris', 'cron: "0 25 * * *"'),
    ("timezone: Europe/Paris", "timezone: Nowhere/Land"),
    ("notify: [ops]", "notify: [pager]"),
])
def test_bad_schedules_name_the_schedule(runbook: Path, replace, message):
    runbook.write_text(runbook.read_text().replace(replace, message))
    # the compiler names the place (exit 65); load_jobs checks again for what it relies on
    with pytest.raises(IacorchError, match="schedules.nightly-drift"):
        load_jobs([str(runbook)])


def test_crontab_export(runbook: Path):
    text = crontab(load_jobs([str(runbook)]), base_dir=str(runbook.parent.parent),
                   program="/opt/iacorch")
    assert "CRON_TZ=Europe/Paris\n0 2 * * * cd " in text
    assert "/opt/iacorch drift plans/site.yaml --var env=prod --remediate" in text
    assert f"CRON_TZ={cron.zone_name(cron.local_zone())}\n5 * * * *" in text
    assert "skipped: `* * * * * *` fires by the second" in text


def test_crontab_escapes_percent_signs(runbook: Path):
    runbook.write_text(runbook.read_text().replace("vars: {env: prod}", "vars: {env: '50%'}"))
    job = find_job(load_jobs([str(runbook)]), "nightly-drift")
    assert "env=50\\%" in crontab([job], base_dir="/")


def test_github_actions_export_runs_each_job_on_its_utc_cron(runbook: Path):
    winter = datetime(2026, 1, 15, tzinfo=UTC)
    text = github_actions(load_jobs([str(runbook)]), base_dir=str(runbook.parent.parent),
                          now=winter)
    assert "    - cron: '0 1 * * *'" in text             # 02:00 Paris is 01:00 UTC in winter
    assert "github.event.schedule == '0 1 * * *'" in text
    assert "iacorch drift plans/site.yaml --var env=prod --remediate --summary" in text
    assert "# skipped site/tick: GitHub runs schedules at most every 5 minutes" in text


@pytest.mark.parametrize(("expression", "shifted", "note"), [
    ("0 2 * * *", "0 0 * * *", "daylight saving"),      # summer: UTC+2
    ("30 1 * * *", "30 23 * * *", "daylight saving"),   # wraps to the day before, every day
    ("30 1 * * 1", "30 1 * * 1", "crosses midnight"),   # ... which a weekday forbids
    ("*/5 2 * * *", "*/5 2 * * *", "shift it by hand"),
])
def test_utc_shift(runbook: Path, expression, shifted, note):
    runbook.write_text(runbook.read_text().replace('"0 2 * * *"', f'"{expression}"'))
    job = find_job(load_jobs([str(runbook)]), "nightly-drift")
    result, why = utc_cron(job, datetime(2026, 7, 1, tzinfo=UTC))
    assert result == shifted and why is not None and note in why


def _scheduler(runbook: Path, tmp_path: Path, store: MemoryStore, now: float) -> Scheduler:
    jobs = [find_job(load_jobs([str(runbook)]), "hourly-plan")]
    return Scheduler(jobs, store=store, state_dir=tmp_path, log=logging.getLogger("test"),
                     actor="tester", host=socket.gethostname(), clock=lambda: now)


def test_a_job_whose_lock_a_live_run_holds_is_skipped(runbook: Path, tmp_path: Path):
    store = MemoryStore()
    scheduler = _scheduler(runbook, tmp_path, store, 1000.0)
    job = scheduler.jobs[0]
    assert scheduler._why_skip(job) is None
    acquire_lock(store, job.lock_key, "r-live", host=socket.gethostname(), pid=os.getpid(),
                       lease_seconds=60)
    assert "locked by run r-live" in (scheduler._why_skip(job) or "")
    scheduler._fire(job, 1000.0, catch_up=False)
    skipped = [e for e in store.audit_entries() if e.kind == "schedule_job_skipped"]
    assert len(skipped) == 1 and skipped[0].data["schedule"] == "hourly-plan"
    assert "r-live" in skipped[0].data["reason"] and not scheduler.running


def test_a_dead_holder_does_not_block_the_job(runbook: Path, tmp_path: Path):
    store = MemoryStore()
    scheduler = _scheduler(runbook, tmp_path, store, 1000.0)
    job = scheduler.jobs[0]
    acquire_lock(store, job.lock_key, "r-dead", host=socket.gethostname(), pid=2 ** 22 + 7,
                       lease_seconds=60)
    assert scheduler._why_skip(job) is None


@pytest.mark.parametrize(("last_fired_hours_ago", "catch_ups"), [
    (None, 0),       # first start: nothing was missed
    (0.5, 0),        # last fire within the hour: the next is still ahead
    (5.0, 1),        # five fire times missed: one catch-up, not five
])
def test_catch_up_at_most_once_after_downtime(runbook: Path, tmp_path: Path,
                                              last_fired_hours_ago, catch_ups):
    now = at(2026, 11, 27, 12, 0, 30)
    if last_fired_hours_ago is not None:
        last = at(2026, 11, 27, 11, 5) - (last_fired_hours_ago - 0.5) * 3600
        (tmp_path / STATE_FILE).write_text(json.dumps({"site/dev/hourly-plan": last}))
    scheduler = _scheduler(runbook, tmp_path, MemoryStore(), now)
    fired: list[tuple[float, bool]] = []
    scheduler._fire = lambda job, when, *, catch_up: fired.append((when, catch_up))  # type: ignore[method-assign]
    stop = threading.Event()
    stop.set()
    scheduler.run(stop)
    assert len(fired) == catch_ups and all(catch_up for _, catch_up in fired)
    assert scheduler.next_at["site/dev/hourly-plan"] == at(2026, 11, 27, 12, 5)
