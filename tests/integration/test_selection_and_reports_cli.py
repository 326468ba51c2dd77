"""Which stages run and what a run reports: policies, `when`, --only/--target, reports,
events, logs."""

from __future__ import annotations

import json
from xml.etree import ElementTree

import pytest

pytestmark = pytest.mark.integration


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
