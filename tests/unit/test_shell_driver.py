"""ShellDriver through a fake ProcessRunner: the argv and env it builds, the outputs it reads."""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers import execute, load_driver
from iacorch.drivers.base import StageContext
from iacorch.drivers.shell import ShellDriver, child_env, command, env_value, parse_outputs
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessResult, ProcessRunner


class FakeRunner(ProcessRunner):
    """Records each call; `behave` may write outputs and returns the fake result."""

    def __init__(self, behave: Callable[[dict[str, Any]], ProcessResult] | None = None) -> None:
        super().__init__(orphan_guard=False)
        self.calls: list[dict[str, Any]] = []
        self.behave = behave or (lambda call: ProcessResult(tuple(call["argv"]), 0, 0.1))

    def run(self, argv, **kwargs) -> ProcessResult:  # type: ignore[override]
        call = {"argv": list(argv), **kwargs}
        self.calls.append(call)
        return self.behave(call)


def writes_outputs(text: str, exit_code: int = 0, **flags: Any):
    def behave(call: dict[str, Any]) -> ProcessResult:
        Path(call["env"]["IACORCH_OUTPUT"]).write_text(text)
        return ProcessResult(tuple(call["argv"]), exit_code, 0.1, ("last line",), **flags)
    return behave


def context(tmp_path: Path, action: Mapping[str, Any], runner: FakeRunner, *,
            operation: Operation = Operation.APPLY, secrets: tuple[str, ...] = (),
            **spec: Any) -> StageContext:
    stage_spec = StageSpec(
        run_id="r-42", stage_id="seed", driver="shell", operation=operation,
        action=action, root_dir=str(tmp_path / "book"), work_dir=str(tmp_path / "work" / "seed"),
        state_dir=str(tmp_path / ".iacorch"), attempt=2, secret_values=secrets, **spec)
    return StageContext(spec=stage_spec, process=runner, masker=Masker(secrets),
                        cancel=CancelToken())


def test_load_driver_finds_the_shell_driver():
    assert isinstance(load_driver("shell"), ShellDriver)


def test_a_script_runs_under_bash_with_errexit_and_pipefail():
    assert command({"run": "echo hi | tee x"}, "/usr/bin/bash") == [
        "/usr/bin/bash", "-eo", "pipefail", "-c", "echo hi | tee x"]
    assert command({"run": "echo hi"}, None) == ["/bin/sh", "-e", "-c", "echo hi"]


def test_an_argv_runs_without_a_shell_and_its_items_become_text():
    assert command({"argv": ["kubectl", "scale", "--replicas", 3, True]}, "/bin/bash") == [
        "kubectl", "scale", "--replicas", "3", "True"]


@pytest.mark.parametrize(("value", "text"), [
    (True, "true"), (False, "false"), (None, ""), (3, "3"), (1.5, "1.5"), ("a b", "a b"),
    ({"a": [1]}, '{"a": [1]}'), ([1, "x"], '[1, "x"]'),
])
def test_env_values_become_text(value, text):
    assert env_value(value) == text


def test_child_env_layers_run_env_secrets_stage_env_and_iacorch_vars(tmp_path):
    spec = context(tmp_path, {}, FakeRunner(), env={"REGION": "eu", "LEVEL": "run"},
                   secret_env={"TOKEN": "s3cr3t", "LEVEL": "secret"}).spec
    action = {"run": "true", "env": {"LEVEL": "stage", "REPLICAS": 2,
                                     "IACORCH_STAGE": "spoofed"}}
    env = child_env(spec, action, str(tmp_path / "out.jsonl"))
    assert env == {"REGION": "eu", "TOKEN": "s3cr3t", "LEVEL": "stage", "REPLICAS": "2",
                   "IACORCH_OUTPUT": str(tmp_path / "out.jsonl"), "IACORCH_RUN_ID": "r-42",
                   "IACORCH_STAGE": "seed", "IACORCH_ATTEMPT": "2"}


def test_apply_runs_in_the_runbook_dir_or_cwd_and_merges_outputs(tmp_path):
    runner = FakeRunner(writes_outputs('{"a": 1, "b": 2}\n\n{"b": 3, "c": [true]}\n'))
    ctx = context(tmp_path, {"run": "deploy", "cwd": "sub/dir"}, runner, timeout=60.0)
    result = ShellDriver().apply(ctx)
    assert result.status is StageStatus.SUCCEEDED
    assert result.outputs == {"a": 1, "b": 3, "c": [True]}
    assert result.output_tail == ("last line",)
    call = runner.calls[0]
    assert call["argv"][1:] == ["-eo", "pipefail", "-c", "deploy"]
    assert call["cwd"] == (tmp_path / "book" / "sub" / "dir").resolve()
    assert call["env"]["IACORCH_OUTPUT"] == str(tmp_path / "work" / "seed.outputs.jsonl")
    assert 0 < call["timeout"] <= 60

    ShellDriver().apply(context(tmp_path, {"argv": ["true"]}, runner))
    assert runner.calls[1]["argv"] == ["true"]
    assert Path(runner.calls[1]["cwd"]) == tmp_path / "book"


def test_a_retry_does_not_see_the_previous_attempts_outputs(tmp_path):
    first = FakeRunner(writes_outputs('{"old": 1}\n'))
    ShellDriver().apply(context(tmp_path, {"run": "x"}, first))
    second = ShellDriver().apply(context(tmp_path, {"run": "x"}, FakeRunner()))
    assert second.ok and second.outputs == {}


def test_outputs_holding_a_secret_are_marked_sensitive(tmp_path):
    runner = FakeRunner(writes_outputs('{"url": "http://x", "dsn": "pg://u:hunter22@db"}\n'))
    result = ShellDriver().apply(context(tmp_path, {"run": "x"}, runner, secrets=("hunter22",)))
    assert result.sensitive_outputs == frozenset({"dsn"})


@pytest.mark.parametrize(("text", "problem"), [
    ('{"a": 1}\n{"a": \n', "line 2: invalid JSON: Expecting value (column 7)"),
    ('{"a": 1}\n[1, 2]\n', "line 2: expected a JSON object, got an array"),
    ('"just text"\n', "line 1: expected a JSON object, got a string"),
    ("\n\n42\n", "line 3: expected a JSON object, got a number"),
    ("null\n", "line 1: expected a JSON object, got null"),
])
def test_parse_outputs_names_the_wrong_line(text, problem):
    assert parse_outputs(text)[1] == problem


def test_parse_outputs_merges_in_order():
    assert parse_outputs('{"a": 1}\n{"a": 2, "b": null}') == ({"a": 2, "b": None}, None)
    assert parse_outputs("") == ({}, None)


def test_a_bad_output_line_fails_the_stage_naming_file_and_line(tmp_path):
    runner = FakeRunner(writes_outputs('{"ok": 1}\nnot json\n'))
    result = ShellDriver().apply(context(tmp_path, {"run": "x"}, runner))
    assert result.status is StageStatus.FAILED
    assert result.error == (f"{tmp_path / 'work' / 'seed.outputs.jsonl'}: line 2: "
                            "invalid JSON: Expecting value (column 1)")
    assert "IACORCH_OUTPUT" in (result.hint or "")


@pytest.mark.parametrize(("exit_code", "hint_part"), [
    (1, "the script failed"), (127, "not found"), (126, "not executable"),
    (137, "killed by SIGKILL"),
])
def test_a_non_zero_exit_fails_with_code_tail_and_hint(tmp_path, exit_code, hint_part):
    runner = FakeRunner(writes_outputs("", exit_code=exit_code))
    result = ShellDriver().apply(context(tmp_path, {"run": "x"}, runner))
    assert result.status is StageStatus.FAILED
    assert result.error == f"exited with code {exit_code}"
    assert result.exit_code == exit_code and result.output_tail == ("last line",)
    assert hint_part in (result.hint or "")


def test_a_timeout_and_an_interrupt_are_reported_as_such(tmp_path):
    timed_out = FakeRunner(writes_outputs("", exit_code=130, timed_out=True))
    result = ShellDriver().apply(context(tmp_path, {"run": "x"}, timed_out, timeout=90.0))
    assert result.status is StageStatus.FAILED and result.error == "timed out after 90s"

    interrupted = FakeRunner(writes_outputs("", exit_code=130, interrupted=True))
    result = ShellDriver().apply(context(tmp_path, {"run": "x"}, interrupted))
    assert result.status is StageStatus.INTERRUPTED and result.interrupted


def test_a_program_that_cannot_start_fails_with_its_sentence(tmp_path):
    runner = FakeRunner(lambda call: ProcessResult(
        tuple(call["argv"]), None, 0.0, start_error="kubectl: not found on PATH"))
    result = ShellDriver().apply(context(tmp_path, {"argv": ["kubectl"]}, runner))
    assert result.status is StageStatus.FAILED
    assert result.error == "kubectl: not found on PATH" and "PATH" in (result.hint or "")


def test_an_empty_argv_fails_without_running(tmp_path):
    runner = FakeRunner()
    result = ShellDriver().apply(context(tmp_path, {"argv": []}, runner))
    assert result.status is StageStatus.FAILED and runner.calls == []


def test_plan_shows_the_masked_command_without_running(tmp_path):
    runner = FakeRunner()
    script = context(tmp_path, {"run": "curl -H 'x: tok-123' $URL"}, runner,
                     operation=Operation.PLAN, secrets=("tok-123",))
    result = ShellDriver().plan(script)
    assert result.status is StageStatus.SUCCEEDED
    assert result.details == {"would_run": "curl -H 'x: ***' $URL"}
    argv = context(tmp_path, {"argv": ["deploy", 3, "tok-123"]}, runner, secrets=("tok-123",))
    assert ShellDriver().plan(argv).details == {"would_run": ["deploy", "3", "***"]}
    assert runner.calls == []


def test_drift_and_destroy_are_skipped_with_a_reason(tmp_path):
    ctx = context(tmp_path, {"run": "x"}, FakeRunner())
    drift, destroy = ShellDriver().drift(ctx), ShellDriver().destroy(ctx)
    assert drift.status is StageStatus.SKIPPED and "no drift check" in drift.details["reason"]
    assert destroy.status is StageStatus.SKIPPED
    assert destroy.details["reason"] == "shell stages have no destroy; give the stage a rollback"


def test_required_tools():
    driver = ShellDriver()
    assert driver.required_tools({"run": "echo"}) == ["bash"]
    assert driver.required_tools({"argv": ["terraform", "fmt"]}) == ["terraform"]


def test_a_full_disk_under_a_driver_is_a_clear_failure_and_other_os_errors_are_bugs(tmp_path):
    def raising(number: int, text: str):
        def behave(call: dict[str, Any]) -> ProcessResult:
            raise OSError(number, text, "/state/runs/r-42/seed/plan.bin")
        return behave

    full = execute(context(tmp_path, {"argv": ["true"]}, FakeRunner(raising(
        errno.ENOSPC, "No space left on device"))))
    assert full.status is StageStatus.FAILED
    assert full.error == ("the shell driver could not write /state/runs/r-42/seed/plan.bin: "
                          "No space left on device")
    assert "df -h" in (full.hint or "")
    bug = execute(context(tmp_path, {"argv": ["true"]}, FakeRunner(raising(
        errno.EBADF, "Bad file descriptor"))))
    assert (bug.error or "").startswith("internal error in the shell driver")
