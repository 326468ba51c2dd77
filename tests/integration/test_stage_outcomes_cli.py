"""Stage outcomes through the real CLI: outputs downstream, masked secrets, failures,
timeouts, retries."""

from __future__ import annotations

import time

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
