"""Controlling a run through the real CLI: rollback, destroy, locks, tools, concurrency,
deadlines, the store."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration


def test_audit_verify_detects_tampering(project):
    import sqlite3

    project.write("one.yaml", """
        version: 1
        name: one
        stages:
          a: {kind: provision, shell: {run: "true"}}
        """)
    assert project.run("apply", "one.yaml").code == 0
    ok = project.run("audit", "verify")
    assert ok.code == 0 and "intact" in ok.out
    db = sqlite3.connect(project.root / ".iacorch/state.db")
    table = next(n for (n,) in db.execute("select name from sqlite_master where type='table'")
                 if "audit" in n)
    # an attacker with the file can drop the append-only triggers; the chain still tells
    for (trigger,) in db.execute("select name from sqlite_master where type='trigger'").fetchall():
        db.execute(f"drop trigger {trigger}")
    db.execute(f"update {table} set kind = 'forged' where rowid = 2")
    db.commit()
    db.close()
    broken = project.run("audit", "verify")
    assert broken.code == 1 and "BROKEN" in broken.err


def test_corrupt_store_is_an_error_and_is_not_overwritten(project):
    project.write("one.yaml", """
        version: 1
        name: one
        stages:
          a: {kind: provision, shell: {run: "touch ran"}}
        """)
    state = project.root / ".iacorch"
    state.mkdir()
    garbage = b"this is not a database" * 100
    (state / "state.db").write_bytes(garbage)
    result = project.run("apply", "one.yaml")
    assert result.code != 0 and "Traceback" not in result.text
    assert "state" in result.err.lower()
    assert (state / "state.db").read_bytes() == garbage
    assert not (project.root / "ran").exists()


def test_rollback_after_failure_and_failed_rollback_continues(project):
    project.write("rb.yaml", """
        version: 1
        name: rb
        on_failure: rollback
        stages:
          a:
            kind: provision
            shell: {run: "touch a.made"}
            rollback: {shell: {run: "rm a.made"}}
          b:
            kind: configure
            needs: [a]
            shell: {run: "touch b.made"}
            rollback: {shell: {run: "test ! -f block-undo && rm b.made"}}
          verify: {kind: verify, needs: [b], shell: {run: "exit 1"}}
        """)
    (project.root / "block-undo").touch()
    first = project.run("apply", "rb.yaml")
    assert first.code == 4, first.text
    assert "iacorch rollback" in first.err
    # b's undo failed, so a (which b depends on) must not have been undone either
    assert (project.root / "a.made").exists() and (project.root / "b.made").exists()
    (project.root / "block-undo").unlink()
    run_id = project.runs()[0]["id"]
    second = project.run("rollback", run_id)
    assert second.code == 1, second.text
    assert not (project.root / "a.made").exists() and not (project.root / "b.made").exists()
    assert project.runs()[0]["status"] == "rolled_back"


def test_destroy_has_its_own_rule_apart_from_rollback(project):
    project.write("down.yaml", """
        version: 1
        name: down
        on_failure: rollback
        stages:
          data:
            kind: provision
            shell: {run: "touch data.made"}
            rollback: none
            destroy: {shell: {run: "rm data.made"}}
          shared:
            kind: provision
            shell: {run: "touch shared.made"}
            rollback: {shell: {run: "rm shared.made"}}
            destroy: none
          check: {kind: verify, needs: [data, shared], shell: {run: "test -f pass"}}
        """)
    failed = project.run("apply", "down.yaml")
    assert failed.code == 1, failed.text          # rolled back: `rollback:` rules
    assert (project.root / "data.made").exists() and not (project.root / "shared.made").exists()
    (project.root / "pass").touch()
    assert project.run("apply", "down.yaml").code == 0
    destroyed = project.run("destroy", "down.yaml")
    assert destroyed.code == 0, destroyed.text    # taken down: `destroy:` rules
    assert not (project.root / "data.made").exists() and (project.root / "shared.made").exists()


def test_lock_second_apply_exits_5_naming_holder(project):
    project.write("hold.yaml", """
        version: 1
        name: hold
        stages:
          wait: {kind: provision, shell: {run: "sleep 3"}}
        """)
    first = project.start("apply", "hold.yaml")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not project.runs():
            time.sleep(0.1)
        started = time.monotonic()
        second = project.run("apply", "hold.yaml")
        assert time.monotonic() - started < 5
        assert second.code == 5, second.text
        assert "locked by run" in second.err and f"pid {first.pid}" in second.err
        waited = project.run("apply", "hold.yaml", "--lock-timeout", "20s")
        assert waited.code == 0, waited.text
    finally:
        first.wait(timeout=30)
    assert first.returncode == 0


def test_missing_tool_stops_before_any_stage_runs(project):
    import shutil

    if shutil.which("pulumi"):
        pytest.skip("the pulumi CLI is installed here")
    project.write("stacks/p/Pulumi.yaml", "name: p\nruntime: python\n")
    project.write("mixed.yaml", """
        version: 1
        name: mixed
        stages:
          first: {kind: provision, shell: {run: "touch first-ran"}}
          stack: {kind: provision, needs: [first], pulumi: {dir: stacks/p}}
        """)
    validated = project.run("validate", "mixed.yaml")
    assert validated.code == 0 and "warning" in validated.err and "pulumi" in validated.err
    applied = project.run("apply", "mixed.yaml")
    assert applied.code == 69, applied.text
    assert "`pulumi` was not found" in applied.err and "pulumi.com" in applied.err
    assert not (project.root / "first-ran").exists()
    assert "Traceback" not in applied.text


def test_concurrency_is_used_and_never_exceeded(project):
    # Each stage counts the stages in flight (itself included) while it runs.
    stage = ('  s{n}: {{kind: deploy, shell: {{run: "touch flight/s{n}; ls flight | wc -l >> seen; '
             'sleep 0.3; rm flight/s{n}"}}}}')
    project.write("wide.yaml", "\n".join(["version: 1", "name: wide", "concurrency: 3",
                                          "stages:", *(stage.format(n=n) for n in range(9))]))
    (project.root / "flight").mkdir()
    result = project.run("apply", "wide.yaml", "--concurrency", "2")
    assert result.code == 0, result.text
    seen = [int(n) for n in (project.root / "seen").read_text().split()]
    assert len(seen) == 9 and max(seen) == 2, seen   # --concurrency wins over the runbook's 3


def test_a_stopping_run_waits_for_its_last_stage_without_spinning(project):
    # `flaky` backs off before a retry that never comes (`broken` stops the run); `slow`
    # keeps the run alive meanwhile: the idle workers must sleep, not poll the store.
    project.write("stop.yaml", """
version: 1
name: stop
concurrency: 4
stages:
  flaky: {kind: deploy, retries: {attempts: 3, backoff: 300ms}, shell: {run: "exit 1"}}
  broken: {kind: deploy, shell: {run: "sleep 0.5; exit 1"}}
  slow: {kind: deploy, shell: {argv: [sleep, "2.5"]}}
""")
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = project.run("apply", "stop.yaml")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.code == 1, result.text
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.5, f"{cpu:.1f} s of CPU for a run that mostly waits"   # spinning: > 2.5 s


def test_a_breached_deadline_is_said_once_per_run_across_a_resume(project):
    project.write("late.yaml", """
        version: 1
        name: late
        deadline: 1s
        stages:
          slow: {kind: provision, shell: {run: "sleep 1.5"}}
          go: {kind: approval, needs: [slow], approvers: [bob]}
          after: {kind: deploy, needs: [go], shell: {run: "true"}}
        notify:
          told:
            command: [sh, -c, "cat >> told.jsonl; echo >> told.jsonl"]
            on: [deadline_breached, succeeded]
        """)
    suspended = project.run("apply", "late.yaml", "--json")
    assert suspended.code == 3, suspended.text
    run_id = project.runs()[0]["id"]
    resumed = project.run("approve", run_id, "go", "--resume", "--json",
                          env={"IACORCH_USER": "bob"})
    assert resumed.code == 0, resumed.text
    events = [json.loads(line)["event"] for line in (suspended.out + resumed.out).splitlines()
              if line.startswith("{")]
    assert events.count("deadline_breached") == 1
    told = [json.loads(line)["event"] for line in
            (project.root / "told.jsonl").read_text().splitlines() if line.strip()]
    assert told == ["deadline_breached", "succeeded"]
