"""The engine through the real CLI: outputs, failures, retries, policies, reports, exit codes."""

from __future__ import annotations

import json
import time
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.integration

PIPELINE = """
version: 1
name: pipeline
vars:
  who: {default: world}
secrets:
  token: {env: PIPE_TOKEN}
stages:
  make:
    kind: provision
    shell:
      run: |
        echo "making for {{ vars.who }} with {{ secrets.token }}"
        echo '{"address": "10.0.0.7", "port": 8080}' >> "$IACORCH_OUTPUT"
        echo '{"port": 8081}' >> "$IACORCH_OUTPUT"
  use:
    kind: configure
    shell:
      argv: [sh, -c, 'echo "$0:$1" > used.txt', "{{ stages.make.outputs.address }}",
             "{{ stages.make.outputs.port }}"]
  check:
    kind: verify
    needs: [use]
    shell: {run: "test \\"$(cat used.txt)\\" = 10.0.0.7:8081"}
"""


def test_outputs_flow_downstream_and_secrets_stay_masked(project):
    project.write("pipe.yaml", PIPELINE)
    result = project.run("apply", "pipe.yaml", env={"PIPE_TOKEN": "hunter2-canary"})
    assert result.code == 0, result.text
    assert (project.root / "used.txt").read_text().strip() == "10.0.0.7:8081"
    assert "hunter2-canary" not in result.text
    assert "making for world with ***" in result.out
    run = project.runs()[0]
    assert run["status"] == "succeeded"
    shown = project.show(run["id"])
    stages = {s["id"]: s for s in shown["stages"]}
    assert stages["make"]["outputs"] == {"address": "10.0.0.7", "port": 8081}
    for path in (project.root / ".iacorch").rglob("*"):
        if path.is_file():
            assert b"hunter2-canary" not in path.read_bytes(), path


def test_missing_secret_stops_before_anything_runs(project):
    project.write("pipe.yaml", PIPELINE)
    env_without = {k: v for k, v in project.env.items() if k != "PIPE_TOKEN"}
    project.env = env_without
    result = project.run("apply", "pipe.yaml")
    assert result.code == 64
    assert "PIPE_TOKEN" in result.err and "Traceback" not in result.err
    assert not (project.root / "used.txt").exists()


def test_failure_names_stage_reason_and_keeps_log_tail(project):
    project.write("fail.yaml", """
        version: 1
        name: fail
        stages:
          boom:
            kind: provision
            shell: {run: "echo first line; echo last words >&2; exit 7"}
          after: {kind: verify, needs: [boom], shell: {run: "touch after.txt"}}
        """)
    result = project.run("apply", "fail.yaml")
    assert result.code == 1
    assert "boom" in result.err and "exited with code 7" in result.err
    assert "iacorch resume" in result.err
    assert not (project.root / "after.txt").exists()
    run_id = project.runs()[0]["id"]
    logs = project.run("logs", run_id, "boom")
    assert "last words" in logs.out


def test_invalid_json_output_fails_naming_the_line(project):
    project.write("badout.yaml", """
        version: 1
        name: badout
        stages:
          out:
            kind: provision
            shell:
              run: |
                echo '{"ok": 1}' >> $IACORCH_OUTPUT
                echo 'not json' >> $IACORCH_OUTPUT
        """)
    result = project.run("apply", "badout.yaml")
    assert result.code == 1
    assert "line 2" in result.err


def test_timeout_fails_the_stage(project):
    project.write("slow.yaml", """
        version: 1
        name: slow
        stages:
          slow: {kind: provision, timeout: 1s, shell: {run: "sleep 30"}}
        """)
    started = time.monotonic()
    result = project.run("apply", "slow.yaml")
    assert result.code == 1
    assert "timed out" in result.err
    assert time.monotonic() - started < 20


def test_a_timeout_from_vars_is_the_one_enforced(project):
    project.write("rto.yaml", """
        version: 1
        name: rto
        vars: {rto: {default: 10m}}
        stages:
          slow: {kind: provision, timeout: "{{ vars.rto }}", shell: {run: "sleep 30"}}
        """)
    started = time.monotonic()
    result = project.run("apply", "rto.yaml", "--var", "rto=1s")
    assert result.code == 1, result.text
    assert "timed out" in result.err
    assert time.monotonic() - started < 20


def test_retries_with_backoff_then_success(project):
    project.write("flaky.yaml", """
        version: 1
        name: flaky
        stages:
          flaky:
            kind: provision
            retries: {attempts: 3, backoff: 200ms}
            shell: {run: "echo x >> tries; test $(wc -l < tries) -ge 3"}
        """)
    result = project.run("apply", "flaky.yaml")
    assert result.code == 0, result.text
    assert (project.root / "tries").read_text().count("x") == 3
    assert "retrying" in result.out


def test_on_failure_continue_finishes_independent_branches(project):
    project.write("cont.yaml", """
        version: 1
        name: cont
        on_failure: continue
        stages:
          bad: {kind: provision, shell: {run: "exit 1"}}
          behind: {kind: configure, needs: [bad], shell: {run: "touch behind"}}
          further: {kind: verify, needs: [behind], shell: {run: "touch further"}}
          other: {kind: provision, shell: {run: "sleep 0.3; touch other"}}
        """)
    result = project.run("apply", "cont.yaml")
    assert result.code == 1
    assert (project.root / "other").exists()
    assert not (project.root / "behind").exists()
    stages = {s["id"]: s for s in project.show(project.runs()[0]["id"])["stages"]}
    assert stages["behind"]["status"] == "skipped"
    assert stages["further"]["status"] == "skipped"
    assert "upstream bad failed" in stages["further"]["error"]


def test_when_false_skips_and_downstream_still_runs(project):
    project.write("when.yaml", """
        version: 1
        name: when
        vars: {env: {default: dev}}
        stages:
          gate-ish: {kind: provision, when: "{{ vars.env == 'prod' }}", shell: {run: "touch prod"}}
          next: {kind: deploy, needs: [gate-ish], shell: {run: "touch next"}}
        """)
    assert project.run("apply", "when.yaml").code == 0
    assert (project.root / "next").exists() and not (project.root / "prod").exists()


def test_only_and_target_select_stages(project):
    project.write("sel.yaml", """
        version: 1
        name: sel
        stages:
          a: {kind: provision, shell: {run: "touch a"}}
          b: {kind: configure, needs: [a], shell: {run: "touch b"}}
          c: {kind: verify, shell: {run: "touch c"}}
        """)
    assert project.run("apply", "sel.yaml", "--target", "b").code == 0
    assert sorted(p.name for p in project.root.iterdir() if len(p.name) == 1) == ["a", "b"]
    assert project.run("apply", "sel.yaml", "--only", "verify").code == 0
    assert (project.root / "c").exists()


def test_reports_junit_json_and_summary(project):
    project.write("fail.yaml", """
        version: 1
        name: rep
        on_failure: continue
        stages:
          good: {kind: provision, shell: {run: "true"}}
          bad: {kind: verify, shell: {run: "echo nope; exit 2"}}
        """)
    result = project.run("apply", "fail.yaml", "--report", "out/junit.xml", "--report",
                         "out/run.json", "--summary", "out/summary.md")
    assert result.code == 1
    suite = ElementTree.parse(project.root / "out/junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    report = json.loads((project.root / "out/run.json").read_text())
    assert report["run"]["status"] == "failed"
    assert {s["id"]: s["status"] for s in report["stages"]} == {"good": "succeeded",
                                                                "bad": "failed"}
    assert "| bad | failed |" in (project.root / "out/summary.md").read_text()


def test_json_event_stream(project):
    project.write("one.yaml", """
        version: 1
        name: one
        stages:
          a: {kind: provision, shell: {run: "echo hi"}}
        """)
    result = project.run("apply", "one.yaml", "--json")
    assert result.code == 0
    events = [json.loads(line) for line in result.out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run_started" and kinds[1] == "stage_started"
    assert kinds[-1] == "run_finished" and events[-1]["status"] == "succeeded"
    assert {e["run"] for e in events} == {events[0]["run"]}
    assert any(e["event"] == "stage_log" and e["line"] == "hi" for e in events)


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


def test_logs_of_a_quiet_stage_are_empty_and_an_unknown_stage_is_named(project):
    project.write("quiet.yaml", "version: 1\nname: quiet\nstages:\n"
                                "  hush: {kind: deploy, shell: {argv: [\"true\"]}}\n")
    assert project.run("apply", "quiet.yaml").code == 0
    run_id = project.runs()[0]["id"]
    quiet = project.run("logs", run_id, "hush")
    assert (quiet.code, quiet.out) == (0, ""), quiet.text
    unknown = project.run("logs", run_id, "nope")
    assert unknown.code == 64
    assert "no stage `nope` that started" in unknown.err and "stages that started: hush" in \
        unknown.err


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
