"""Pulumi driver without Pulumi: the exact Automation API calls, results and error mapping.

`fake_pulumi` stands in for `pulumi.automation`; its results and errors are the
installed package's own classes, so these tests read real shapes.
"""

from __future__ import annotations

import inspect
import io
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto
from semver import VersionInfo

from iacorch.drivers import load_driver
from iacorch.drivers.base import StageContext
from iacorch.drivers.pulumi import MISSING_CLI, PulumiDriver, config_text
from iacorch.drivers.pulumi_cli import InterruptibleCommand
from iacorch.drivers.pulumi_events import change_summary
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner

if str(Path(__file__).parent) not in sys.path:    # pytest's importlib mode does not add it
    sys.path.insert(0, str(Path(__file__).parent))
from fake_pulumi import (  # noqa: E402
    FakeAutomation,
    FakeLegacyStack,
    FakeStack,
    Script,
    diagnostic,
    state,
    step,
    summary,
    urn,
)

TOKEN = "s3cr3t-t0ken-value"


@dataclass
class Harness:
    ctx: StageContext
    fake: FakeAutomation
    lines: list[str] = field(default_factory=list)
    progress: list[dict[str, Any]] = field(default_factory=list)

    def run(self, operation: str, **driver_args: Any) -> StageResult:
        driver = PulumiDriver(self.fake, command_factory=self.fake.command_factory,
                              interrupt_grace=driver_args.pop("grace", 5.0))
        return getattr(driver, operation)(self.ctx)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(autouse=True)
def _no_user_pulumi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE",
                 "PULUMI_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)


def harness(tmp_path: Path, action: dict[str, Any] | None = None, *,
            stacks: tuple[str, ...] = (), legacy: bool = False, **spec: Any) -> Harness:
    project = tmp_path / "stacks" / "site"
    project.mkdir(parents=True, exist_ok=True)
    (project / "Pulumi.yaml").write_text("name: pulumi-site\nruntime: python\n")
    (tmp_path / "plans").mkdir(exist_ok=True)
    stage_spec = StageSpec(
        run_id="r1", stage_id="site", driver="pulumi",
        operation=spec.pop("operation", Operation.APPLY),
        action={"dir": "../stacks/site", "stack": "dev", **(action or {})},
        root_dir=str(tmp_path / "plans"), work_dir=str(tmp_path / "runs" / "r1" / "site"),
        state_dir=str(tmp_path / ".iacorch"), **spec)
    fake = FakeAutomation(stacks=stacks, legacy=legacy)
    h = Harness(ctx=None, fake=fake)  # type: ignore[arg-type]
    h.ctx = StageContext(spec=stage_spec, process=ProcessRunner(orphan_guard=False),
                         masker=Masker(stage_spec.secret_values), cancel=CancelToken(),
                         on_line=h.lines.append, on_progress=h.progress.append)
    return h


def created_site() -> list[auto.EngineEvent]:
    return [*step("create", "pulumi-site-dev", "pulumi:pulumi:Stack"),
            *step("create", "index"), *step("create", "settings"), summary(create=3)]


# --- apply -----------------------------------------------------------------------------------

def test_apply_creates_the_stack_sets_config_then_previews_and_ups(tmp_path: Path) -> None:
    h = harness(tmp_path, {"config": {"title": "Hello", "replicas": 2, "debug": True,
                                      "tags": ["a", "b"], "admin_token": TOKEN}},
                secret_values=(TOKEN,))
    h.fake.script("preview", Script(events=created_site()))
    h.fake.script("up", Script(events=created_site(), stdout=["Resources:", "    + 3 created"]))
    h.fake.outputs = {"url": auto.OutputValue("file:///tmp/site/index.html", secret=False),
                      "admin_token": auto.OutputValue(TOKEN, secret=True)}

    result = h.run("apply")

    assert result.status is StageStatus.SUCCEEDED, result.error
    assert h.fake.names() == ["command_factory", "select_stack", "create_stack",
                              "set_all_config", "cli config set --secret", "preview", "up",
                              "outputs"]
    project = str(tmp_path / "stacks" / "site")
    create = h.fake.call("create_stack").args
    assert (create["stack_name"], create["work_dir"]) == ("dev", project)
    opts = create["opts"]
    assert isinstance(opts, auto.LocalWorkspaceOptions)
    assert opts.work_dir == project and opts.pulumi_command is h.fake.cli
    backend = tmp_path / ".iacorch" / "pulumi"
    assert opts.env_vars["PULUMI_BACKEND_URL"] == f"file://{backend}"
    config = h.fake.call("set_all_config").args["config"]
    assert {k: (v.value, v.secret) for k, v in config.items()} == {
        "title": ("Hello", False), "replicas": ("2", False), "debug": ("true", False),
        "tags": ('["a", "b"]', False)}
    # the secret goes to the CLI on stdin: a command line is readable by every local user
    secret = h.fake.call("cli config set --secret").args
    assert secret["args"] == ["config", "set", "--secret", "--stack", "dev", "--",
                              "admin_token"]
    assert secret["stdin"] == TOKEN and secret["cwd"] == project
    assert secret["env"]["PULUMI_BACKEND_URL"] == f"file://{backend}"
    stored = h.fake.config["dev"]
    assert (stored["admin_token"].value, stored["admin_token"].secret) == (TOKEN, True)
    preview, up = h.fake.call("preview").args, h.fake.call("up").args
    assert preview["expect_no_changes"] is None and preview["color"] == "never"
    assert preview["refresh"] is None and up["refresh"] is None
    assert result.changes is not None and str(result.changes) == "+3 ~0 -0"
    assert [c.action for c in result.changes.resources] == ["create"] * 3
    assert result.outputs == {"url": "file:///tmp/site/index.html", "admin_token": TOKEN}
    assert result.sensitive_outputs == {"admin_token"}
    assert result.details["stack_created"] is True
    assert result.details["applied"] == {"create": 3}


def test_apply_on_an_existing_stack_only_selects_it(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    result = h.run("apply")
    assert result.ok
    assert h.fake.names() == ["command_factory", "select_stack", "preview", "up", "outputs"]
    assert result.details["stack_created"] is False


def test_refresh_true_refreshes_before_preview_and_up(tmp_path: Path) -> None:
    h = harness(tmp_path, {"refresh": True}, stacks=("dev",))
    assert h.run("apply").ok
    assert h.fake.call("preview").args["refresh"] is True
    assert h.fake.call("up").args["refresh"] is True


def test_engine_events_become_one_log_line_each_and_progress(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.script("preview", Script(events=[*step("update", "index"), *step("same", "settings"),
                                            summary(update=1, same=1)]))
    h.fake.script("up", Script(events=[*step("update", "index"), *step("same", "settings"),
                                       summary(update=1, same=1)]))
    result = h.run("apply")
    assert result.ok and str(result.changes) == "+0 ~1 -0"
    assert result.changes is not None and result.changes.unchanged == 1
    resource_lines = [ln for ln in h.lines if ln.startswith("pulumi-python:dynamic:Resource")]
    assert resource_lines == ["pulumi-python:dynamic:Resource index: update...",
                              "pulumi-python:dynamic:Resource index: update done"] * 2
    done = [p for p in h.progress if p["status"] == "complete"]
    assert done[-1] == {"kind": "resource", "address": urn("index"), "status": "complete",
                        "action": "update", "type": "pulumi-python:dynamic:Resource",
                        "name": "index", "completed": 1, "total": 1}


def test_a_replacement_adds_and_destroys_once(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.PLAN)
    h.fake.script("preview", Script(events=[
        *step("create-replacement", "index"), *step("replace", "index"),
        *step("delete-replaced", "index"), summary(replace=1, same=2)]))
    result = h.run("plan")
    assert result.changes is not None and str(result.changes) == "+1 ~0 -1"
    assert [(c.address, c.action) for c in result.changes.resources] == [(urn("index"),
                                                                          "replace")]


def test_stdout_and_secret_outputs_are_masked_in_the_log(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.outputs = {"db_password": auto.OutputValue("hunter2-db", secret=True),
                      "echo": auto.OutputValue({"nested": [TOKEN]}, secret=False)}
    h.fake.script("up", Script(stdout=[f"token is {TOKEN}"]))
    h.ctx.masker.add([TOKEN])
    result = h.run("apply")
    assert result.ok
    assert TOKEN not in h.log and "token is ***" in h.log
    h.ctx.log("later the password hunter2-db leaked")
    assert h.lines[-1] == "later the password *** leaked"
    # a plain output that carries a secret value is sensitive too
    assert result.sensitive_outputs == {"db_password", "echo"}


# --- plan and the approved changes -----------------------------------------------------------

def test_plan_previews_only_and_saves_the_changes(tmp_path: Path) -> None:
    h = harness(tmp_path, operation=Operation.PLAN)
    h.fake.script("preview", Script(events=created_site()))
    result = h.run("plan")
    assert result.ok and str(result.changes) == "+3 ~0 -0"
    assert "up" not in h.fake.names()
    assert result.saved_plan is not None
    saved = json.loads(Path(result.saved_plan).read_text())
    assert saved["stack"] == "dev"
    assert [change[:2] for change in saved["changes"]] == sorted([
        [urn("index"), "create"], [urn("settings"), "create"],
        [urn("pulumi-site-dev", "pulumi:pulumi:Stack"), "create"]])


def test_apply_refuses_changes_other_than_the_approved_ones(tmp_path: Path) -> None:
    planned = harness(tmp_path, operation=Operation.PLAN)
    planned.fake.script("preview", Script(events=[*step("update", "index", diffs=["content"]),
                                                  summary(update=1)]))
    saved_plan = planned.run("plan").saved_plan

    same = harness(tmp_path, stacks=("dev",), saved_plan=saved_plan)
    same.fake.script("preview", Script(events=[*step("update", "index", diffs=["content"]),
                                               summary(update=1)]))
    assert same.run("apply").ok

    other = harness(tmp_path, stacks=("dev",), saved_plan=saved_plan)
    other.fake.script("preview", Script(events=[*step("delete", "index"), summary(delete=1)]))
    result = other.run("apply")
    assert result.status is StageStatus.FAILED
    assert result.error == "pulumi would now make other changes than the approved plan"
    assert "up" not in other.fake.names()


# --- drift -----------------------------------------------------------------------------------

def test_drift_in_sync_runs_expect_no_changes_then_a_refresh_preview(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.DRIFT)
    h.fake.script("preview_refresh", Script(events=[
        *step("refresh", "index", old=state("index", {"a": 1}), new=state("index", {"a": 1})),
        summary(same=2)]))
    result = h.run("drift")
    assert result.status is StageStatus.SUCCEEDED and result.drifted is False
    assert h.fake.names() == ["command_factory", "select_stack", "preview", "preview_refresh"]
    assert h.fake.call("preview").args["expect_no_changes"] is True
    assert h.fake.call("preview").args["refresh"] is None   # program vs state only
    assert result.details["findings"] == []


def test_drift_when_the_program_differs_from_the_state(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.DRIFT)
    h.fake.script("preview", Script(events=[*step("update", "index", diffs=["content"]),
                                            summary(update=1, same=2)]))
    result = h.run("drift")
    assert result.status is StageStatus.SUCCEEDED and result.drifted is True
    assert result.details["findings"] == [
        {"address": urn("index"), "action": "update", "source": "program"}]
    assert result.changes is not None and result.changes.change == 1


def test_drift_when_reality_differs_from_the_state(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.DRIFT)
    h.fake.script("preview_refresh", Script(events=[
        *step("refresh", "index", old=state("index", {"size": 10}), new=None),
        *step("refresh", "settings", old=state("settings", {"a": 1}),
              new=state("settings", {"a": 2})),
        *step("refresh", "other", old=state("other", {"a": 1}), new=state("other", {"a": 1})),
        summary(delete=1, update=1, same=1)]))
    result = h.run("drift")
    assert result.drifted is True
    assert result.details["findings"] == [
        {"address": urn("index"), "action": "delete", "source": "refresh"},
        {"address": urn("settings"), "action": "update", "source": "refresh"}]


def test_drift_with_an_older_automation_api_uses_refresh_preview_only(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), legacy=True, operation=Operation.DRIFT)
    h.fake.script("refresh", Script(events=[
        *step("refresh", "index", old=state("index", {"a": 1}), new=None),
        summary(delete=1)]))
    result = h.run("drift")
    assert h.fake.call("refresh").args["preview_only"] is True
    assert result.drifted is True


def test_drift_of_a_missing_stack_creates_nothing(tmp_path: Path) -> None:
    h = harness(tmp_path, operation=Operation.DRIFT)
    result = h.run("drift")
    assert result.ok and result.drifted is True
    assert h.fake.names() == ["command_factory", "select_stack"]
    assert result.details["findings"][0]["action"] == "missing"


def test_a_failing_drift_preview_is_an_error_not_drift(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.DRIFT)
    h.fake.script("preview", Script(fails=True, stderr="error: program failed"))
    result = h.run("drift")
    assert result.status is StageStatus.FAILED and result.drifted is None


# --- destroy ---------------------------------------------------------------------------------

def test_destroy(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), operation=Operation.DESTROY)
    h.fake.script("destroy", Script(events=[*step("delete", "index"), *step("delete", "settings"),
                                            summary(delete=2)]))
    result = h.run("destroy")
    assert result.ok and str(result.changes) == "+0 ~0 -2"
    assert h.fake.names() == ["command_factory", "select_stack", "destroy"]


def test_destroying_a_stack_that_does_not_exist_does_nothing(tmp_path: Path) -> None:
    h = harness(tmp_path, operation=Operation.DESTROY)
    result = h.run("destroy")
    assert result.ok and result.details["stack_missing"] is True
    assert "create_stack" not in h.fake.names() and "destroy" not in h.fake.names()


# --- backend and passphrase ------------------------------------------------------------------

def test_the_local_backend_gets_a_private_generated_passphrase(tmp_path: Path) -> None:
    first = harness(tmp_path, stacks=("dev",))
    assert first.run("apply").ok
    env = first.fake.call("select_stack").args["opts"].env_vars
    passphrase = Path(env["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert passphrase == tmp_path / ".iacorch" / "pulumi" / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    value = passphrase.read_text()
    assert len(value) >= 32 and value in first.ctx.masker.secrets
    assert "PULUMI_CONFIG_PASSPHRASE" not in env

    again = harness(tmp_path, stacks=("dev",))
    assert again.run("apply").ok
    assert passphrase.read_text() == value


def test_a_passphrase_from_a_runbook_secret_wins(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), secret_values=("pass-phrase",),
                secret_env={"IACORCH_SECRET_PULUMI_CONFIG_PASSPHRASE": "pass-phrase"})
    assert h.run("apply").ok
    env = h.fake.call("select_stack").args["opts"].env_vars
    assert env["PULUMI_CONFIG_PASSPHRASE"] == "pass-phrase"
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in env


def test_a_passphrase_in_the_users_environment_is_respected(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "mine")
    h = harness(tmp_path, stacks=("dev",))
    assert h.run("apply").ok
    env = h.fake.call("select_stack").args["opts"].env_vars
    assert not {"PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"} & set(env)


def test_an_explicit_backend_and_env(tmp_path: Path) -> None:
    h = harness(tmp_path, {"backend": "s3://bucket/state", "env": {"AWS_REGION": "eu-west-1",
                                                                   "RETRIES": 3}},
                stacks=("dev",), env={"FROM_RUNBOOK": "yes"})
    assert h.run("apply").ok
    env = h.fake.call("select_stack").args["opts"].env_vars
    assert env["PULUMI_BACKEND_URL"] == "s3://bucket/state"
    assert (env["AWS_REGION"], env["RETRIES"], env["FROM_RUNBOOK"]) == ("eu-west-1", "3", "yes")
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in env
    assert not (tmp_path / ".iacorch" / "pulumi").exists()


# --- errors as values ------------------------------------------------------------------------

def test_a_locked_stack_names_pulumi_cancel(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.script("up", Script(fails=True, stderr=(
        "error: the stack is currently locked by 1 lock(s). Either wait for the other "
        "process(es) to end or delete the lock file with `pulumi cancel`.")))
    result = h.run("apply")
    assert result.status is StageStatus.FAILED
    assert result.error == "stack dev is locked by another update"
    assert result.hint is not None and "pulumi cancel --stack dev" in result.hint
    assert f"PULUMI_BACKEND_URL=file://{tmp_path / '.iacorch' / 'pulumi'}" in result.hint
    assert result.exit_code == 255


def test_a_command_error_is_a_masked_failed_result(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), secret_values=(TOKEN,))
    h.fake.script("up", Script(
        events=[diagnostic(f"\x1b[31mwrite failed: token {TOKEN} refused\x1b[0m")],
        stdout=["Updating (dev)", f"error: token {TOKEN} refused"],
        fails=True, stderr=f"error: update failed for {TOKEN}"))
    result = h.run("apply")
    assert result.status is StageStatus.FAILED and not result.interrupted
    assert result.error == "pulumi up failed: write failed: token *** refused"
    assert result.output_tail == ("Updating (dev)", "error: token *** refused")
    assert TOKEN not in h.log and TOKEN not in (result.hint or "")


def test_a_failed_resource_is_logged_and_reported_as_errored(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.script("up", Script(events=[*step("create", "index", failed=True),
                                       diagnostic("creating index: permission denied")],
                               fails=True, stderr="error: update failed"))
    result = h.run("apply")
    assert result.error == "pulumi up failed: creating index: permission denied"
    assert "pulumi-python:dynamic:Resource index: create failed" in h.lines
    assert h.progress[-1]["status"] == "errored"


def test_a_passphrase_error_explains_where_the_passphrase_comes_from(tmp_path: Path) -> None:
    h = harness(tmp_path, {"backend": "file:///srv/state"})
    h.fake.script("up", Script(fails=True, stderr=(
        "error: passphrase must be set with PULUMI_CONFIG_PASSPHRASE or "
        "PULUMI_CONFIG_PASSPHRASE_FILE environment variables")))
    result = h.run("apply")
    assert result.hint is not None and "PULUMI_CONFIG_PASSPHRASE" in result.hint


def test_missing_cli(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.fake.cli_installed = False
    result = h.run("apply")
    assert result.status is StageStatus.FAILED
    assert result.error == MISSING_CLI == ("the pulumi CLI is not on PATH; install it from "
                                           "https://www.pulumi.com/docs/install/")
    assert h.fake.names() == ["command_factory"]


def test_a_cli_too_old_for_the_sdk(tmp_path: Path) -> None:
    h = harness(tmp_path)
    h.fake.version_error = "Minimum version requirement failed."
    result = h.run("apply")
    assert result.error == "unsupported pulumi CLI: Minimum version requirement failed."


def test_an_invalid_action_or_project_dir_is_a_failed_result(tmp_path: Path) -> None:
    h = harness(tmp_path, {"stack": "dev", "bogus": 1})
    result = h.run("apply")
    assert result.status is StageStatus.FAILED and result.error is not None
    assert result.error.startswith("invalid pulumi action")
    h = harness(tmp_path, {"dir": "../nowhere"})
    assert "no Pulumi project" in (h.run("apply").error or "")
    assert h.fake.calls == []


def test_required_tools() -> None:
    assert PulumiDriver().required_tools({"dir": "x"}) == ["pulumi"]
    assert type(load_driver("pulumi")) is PulumiDriver


# --- cancellation and timeouts ---------------------------------------------------------------

def test_an_interrupt_sends_one_sigint_and_the_cli_stops_cleanly(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.script("up", Script(on_start=h.ctx.cancel.interrupt, hangs=True))
    result = h.run("apply")
    assert result.status is StageStatus.INTERRUPTED and result.interrupted
    assert result.error == "pulumi up interrupted"
    assert h.fake.cli.signals == ["SIGINT"]
    assert "cancel" not in h.fake.names()     # a clean stop released the lock itself


def test_a_cli_that_ignores_sigint_is_killed_and_the_lock_released(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.script("up", Script(on_start=h.ctx.cancel.interrupt, hangs=True,
                               ignores_sigint=True))
    result = h.run("apply", grace=0.0)
    assert result.interrupted
    assert h.fake.cli.signals == ["SIGINT", "SIGKILL"]
    assert h.fake.names()[-1] == "cancel"
    assert result.hint is not None and "pulumi refresh --stack dev" in result.hint


def test_a_failing_lock_release_is_logged_not_raised(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.fake.cancel_error = "error: no update in progress"
    h.fake.script("up", Script(on_start=h.ctx.cancel.interrupt, hangs=True,
                               ignores_sigint=True))
    result = h.run("apply", grace=0.0)
    assert result.interrupted and "could not release the lock" in h.log


def test_a_timeout_stops_the_cli_and_fails(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",), timeout=0.01)
    h.fake.script("destroy", Script(hangs=True))
    result = h.run("destroy")
    assert result.status is StageStatus.FAILED and not result.interrupted
    assert result.error == "pulumi destroy timed out after 0.01s"
    assert h.fake.cli.signals == ["SIGINT"]


def test_an_interrupt_between_preview_and_up_starts_no_update(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))

    def interrupt_and_wait() -> None:
        h.ctx.cancel.interrupt()
        h.fake.cli.wait_signal()                # the watcher has seen it

    h.fake.script("preview", Script(on_start=interrupt_and_wait))
    result = h.run("apply")
    assert result.interrupted and "up" not in h.fake.names()


def test_nothing_starts_after_an_interrupt(tmp_path: Path) -> None:
    h = harness(tmp_path, stacks=("dev",))
    h.ctx.cancel.interrupt()
    result = h.run("apply")
    assert result.interrupted and h.fake.calls == []


# --- the CLI wrapper -------------------------------------------------------------------------

class FakePopen:
    """subprocess.Popen for InterruptibleCommand: records how the CLI would be started."""

    started: list[FakePopen] = []

    def __init__(self, argv: list[str], *, stdout_text: str = "", stderr_text: str = "",
                 code: int = 0, **kwargs: Any) -> None:
        self.argv, self.kwargs = argv, kwargs
        self.stdout, self.stderr = io.StringIO(stdout_text), io.StringIO(stderr_text)
        self.stdin = _Input() if kwargs.get("stdin") == subprocess.PIPE else None
        self.returncode: int | None = None
        self._code = code
        self.pid = -1

    def __enter__(self) -> FakePopen:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def wait(self) -> int:
        self.returncode = self._code
        return self._code

    def kill(self) -> None:
        self.killed = True


class _Input:
    """A CLI's stdin: the bytes written to it, and whether it was closed (end of input)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.data, self.closed_at_end = b"", False

    def close(self) -> None:
        self.data, self.closed_at_end = self.buffer.getvalue(), True


def popen_factory(started: list[FakePopen], **result: Any) -> Any:
    def popen(argv: list[str], **kwargs: Any) -> FakePopen:
        started.append(FakePopen(argv, **result, **kwargs))
        return started[-1]
    return popen


def test_the_cli_runs_in_its_own_session_with_the_automation_env(tmp_path: Path) -> None:
    started: list[FakePopen] = []
    command = InterruptibleCommand(auto, "pulumi", VersionInfo(3, 190, 0),
                                   popen=popen_factory(started, stdout_text="one\ntwo\n"))
    seen: list[str] = []
    result = command.run(["preview", "--stack", "dev"], str(tmp_path), {"A": "1"},
                         on_output=seen.append)
    (proc,) = started
    assert proc.argv == ["pulumi", "--non-interactive", "preview", "--stack", "dev"]
    assert proc.kwargs["start_new_session"] is True and proc.kwargs["cwd"] == str(tmp_path)
    assert proc.kwargs["env"]["A"] == "1"
    assert proc.kwargs["env"]["PULUMI_AUTOMATION_API"] == "true"
    assert proc.kwargs["env"]["PATH"] == os.environ["PATH"]
    assert isinstance(result, auto.CommandResult) and result.stdout == "one\ntwo"
    assert seen == ["one", "two"]


def test_a_secret_config_value_reaches_the_cli_on_stdin_only(tmp_path: Path) -> None:
    started: list[FakePopen] = []
    command = InterruptibleCommand(auto, "pulumi", None, popen=popen_factory(started))
    command.set_secret_config("dev", "db:password", TOKEN, str(tmp_path), {"A": "1"})
    pem = f"-----BEGIN KEY-----\n{TOKEN}\n-----END KEY-----\n"
    command.set_secret_config("dev", "tls:key", pem, str(tmp_path), {})
    command.run(["preview", "--stack", "dev"], str(tmp_path), {})
    secret, key, preview = started
    assert secret.argv == ["pulumi", "--non-interactive", "config", "set", "--secret",
                           "--stack", "dev", "--", "db:password"]
    assert secret.kwargs["stdin"] == subprocess.PIPE and secret.stdin is not None
    assert not any(TOKEN in arg for arg in secret.argv + key.argv)
    # the CLI drops one trailing newline from its input: one more keeps the value whole
    assert secret.stdin.data == f"{TOKEN}\n".encode() and secret.stdin.closed_at_end
    assert key.stdin is not None and key.stdin.data == f"{pem}\n".encode()
    # other commands get no input at all, never our terminal
    assert preview.kwargs["stdin"] == subprocess.DEVNULL


def test_a_secret_that_is_not_utf8_passes_as_it_came_and_a_failed_feed_stops_the_cli(
        tmp_path: Path) -> None:
    started: list[FakePopen] = []
    command = InterruptibleCommand(auto, "pulumi", None, popen=popen_factory(started))
    from_env = os.fsdecode(b"caf\xe9-" + TOKEN.encode())    # Latin-1 bytes in os.environ
    command.set_secret_config("dev", "legacy", from_env, str(tmp_path), {})
    assert started[0].stdin is not None
    assert started[0].stdin.data == b"caf\xe9-" + TOKEN.encode() + b"\n"

    class Interrupted(_Input):
        def close(self) -> None:
            raise KeyboardInterrupt   # say, Ctrl-C while the value is being written

    def popen(argv: list[str], **kwargs: Any) -> FakePopen:
        started.append(FakePopen(argv, **kwargs))
        started[-1].stdin = Interrupted()
        return started[-1]

    command = InterruptibleCommand(auto, "pulumi", None, popen=popen)
    with pytest.raises(KeyboardInterrupt):
        command.set_secret_config("dev", "db:password", TOKEN, str(tmp_path), {})
    assert getattr(started[-1], "killed", False), "a CLI holding part of a secret must stop"


def test_the_cli_wrapper_raises_the_automation_api_errors(tmp_path: Path) -> None:
    started: list[FakePopen] = []
    command = InterruptibleCommand(auto, "pulumi", None, popen=popen_factory(
        started, stderr_text="error: the stack is currently locked by 1 lock(s)\n", code=255))
    with pytest.raises(auto.ConcurrentUpdateError):
        command.run(["up", "--yes"], str(tmp_path), {})


def test_after_an_interrupt_only_pulumi_cancel_may_start(tmp_path: Path) -> None:
    started: list[FakePopen] = []
    command = InterruptibleCommand(auto, "pulumi", None, popen=popen_factory(started))
    command.interrupt()
    with pytest.raises(auto.CommandError, match="iacorch is stopping"):
        command.run(["up", "--yes"], str(tmp_path), {})
    command.run(["cancel", "--yes", "--stack", "dev"], str(tmp_path), {})
    assert [p.argv[2] for p in started] == ["cancel"]


def test_the_cli_wrapper_keeps_the_automation_api_interface() -> None:
    ours = inspect.signature(InterruptibleCommand.run).parameters
    theirs = inspect.signature(auto.PulumiCommand.run).parameters
    assert list(ours)[:len(theirs)] == list(theirs)
    extras = list(ours.values())[len(theirs):]      # ours alone: keyword-only, optional
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in extras)


# --- small pieces ----------------------------------------------------------------------------

def test_change_summary_reads_optype_and_text_keys() -> None:
    assert str(change_summary({auto.OpType.CREATE: 2, "delete": 1, "same": 4})) == "+2 ~0 -1"
    assert change_summary(None).has_changes is False


def test_config_text() -> None:
    assert [config_text(v) for v in ("a", 1, 1.5, False, {"k": [1]})] == [
        "a", "1", "1.5", "false", '{"k": [1]}']


def test_the_fake_keeps_the_real_signatures() -> None:
    """A fake method takes only arguments the installed pulumi.automation takes, by name."""
    fake = FakeAutomation()
    pairs: list[tuple[Any, Any]] = [
        (fake.select_stack, auto.select_stack), (fake.create_stack, auto.create_stack),
        (fake.create_or_select_stack, auto.create_or_select_stack)]
    pairs += [(getattr(FakeStack, name), getattr(auto.Stack, name))
              for name in ("set_all_config", "preview", "up", "destroy", "refresh",
                           "preview_refresh", "outputs", "cancel")]
    for ours, real in pairs:
        real_params = inspect.signature(real).parameters
        for name, param in inspect.signature(ours).parameters.items():
            assert name in real_params, f"{ours.__qualname__}({name}=) is not in the real API"
            assert param.kind == real_params[name].kind, f"{ours.__qualname__}({name})"
    assert not hasattr(FakeLegacyStack, "preview_refresh")


# --- the example stack -----------------------------------------------------------------------

def test_the_example_stacks_files_read_back_as_drift(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """stacks/pulumi-site runs under Pulumi's mocks, and its provider reports what refresh sees."""
    import runpy

    import pulumi

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: Any) -> tuple[str, dict[str, Any]]:
            return f"{args.name}_id", dict(args.inputs)

        def call(self, args: Any) -> dict[str, Any]:
            return {}

    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({
        "pulumi-site:site_dir": str(tmp_path / "site"), "pulumi-site:admin_token": TOKEN}))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", '["pulumi-site:admin_token"]')
    pulumi.runtime.set_mocks(Mocks(), project="pulumi-site", stack="dev", preview=False)
    program = Path(__file__).parents[2] / "stacks" / "pulumi-site" / "__main__.py"
    provider = runpy.run_path(str(program), run_name="__main__")["LocalFileProvider"]()

    path = str(tmp_path / "site" / "index.html")
    created = provider.create({"path": path, "content": "<h1>hi</h1>", "sha256": None})
    assert created.id == path and Path(path).read_text() == "<h1>hi</h1>"
    assert provider.read(path, created.outs).outs == created.outs          # in sync
    Path(path).write_text("edited")
    assert provider.read(path, created.outs).outs["content"] == "edited"   # drift: update
    assert provider.diff(path, created.outs, {**created.outs, "content": "x"}).changes
    provider.delete(path, created.outs)
    assert provider.read(path, created.outs).id == ""                       # drift: gone
