"""A faithful fake of the `pulumi.automation` objects the Pulumi driver uses.

Everything that flows back to the driver is made by the installed package's
own code: engine events are parsed by `EngineEvent.from_json` from the JSON the
CLI writes, results are the real `PreviewResult`, `UpResult`, `UpdateSummary`,
`DestroyResult`, `RefreshResult` and `OutputValue`, and errors come from the
real `create_command_error`, which picks `ConcurrentUpdateError` or
`StackNotFoundError` from the CLI's stderr. Only what a stack operation does is
scripted. Method and argument names are those of the real API (a test checks
them against the installed signatures), and every call is recorded.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pulumi import automation as auto
from pulumi.automation.errors import create_command_error
from semver import VersionInfo

from iacorch.drivers.pulumi_cli import InterruptibleCommand

PROJECT = "pulumi-site"
RESOURCE_TYPE = "pulumi-python:dynamic:Resource"
_SIGNAL_WAIT = 10.0     # a test that forgets to signal fails instead of hanging


def urn(name: str, type_: str = RESOURCE_TYPE, stack: str = "dev") -> str:
    return f"urn:pulumi:{stack}::{PROJECT}::{type_}::{name}"


def step(op: str, name: str, type_: str = RESOURCE_TYPE, *, stack: str = "dev",
         diffs: list[str] | None = None, old: Mapping[str, Any] | None = None,
         new: Mapping[str, Any] | None = None, failed: bool = False,
         planning: bool | None = None) -> list[auto.EngineEvent]:
    """The pre event and the outputs (or failure) event of one resource step."""
    metadata = {"op": op, "urn": urn(name, type_, stack), "type": type_, "provider": "",
                "diffs": diffs, "old": old, "new": new}
    pre = {"resourcePreEvent": {"metadata": metadata, "planning": planning}}
    end = ({"resOpFailedEvent": {"metadata": metadata, "status": 1, "steps": 0}} if failed
           else {"resOutputsEvent": {"metadata": metadata, "planning": planning}})
    return [_event(pre), _event(end)]


def state(name: str, outputs: Mapping[str, Any], type_: str = RESOURCE_TYPE) -> dict[str, Any]:
    """A StepEventStateMetadata as JSON: what `old` and `new` carry."""
    return {"type": type_, "urn": urn(name, type_), "id": name, "parent": "", "provider": "",
            "outputs": dict(outputs)}


def summary(**counts: int) -> auto.EngineEvent:
    """The summary event; `delete_replaced=1` is written as the CLI does: `delete-replaced`."""
    changes = {key.replace("_", "-"): value for key, value in counts.items()}
    return _event({"summaryEvent": {"maybeCorrupt": False, "durationSeconds": 1,
                                    "resourceChanges": changes, "PolicyPacks": {}}})


def diagnostic(message: str, severity: str = "error") -> auto.EngineEvent:
    return _event({"diagnosticEvent": {"message": message, "color": "never",
                                       "severity": severity}})


def _event(payload: dict[str, Any]) -> auto.EngineEvent:
    return auto.EngineEvent.from_json({"sequence": 0, "timestamp": 0, **payload})


@dataclass
class Script:
    """What one CLI operation does: the events it emits, what it prints, how it ends."""

    events: list[auto.EngineEvent] = field(default_factory=lambda: [summary(same=1)])
    stdout: list[str] = field(default_factory=list)
    fails: bool = False
    stderr: str = ""                          # printed before a failing exit
    on_start: Callable[[], None] | None = None  # e.g. a test's `cancel.interrupt`
    hangs: bool = False                       # runs until a signal reaches the CLI
    ignores_sigint: bool = False


@dataclass(frozen=True)
class Call:
    name: str
    args: dict[str, Any]


class FakeCli:
    """Stands in for the driver's InterruptibleCommand: the CLI process that signals reach.

    The fake stack does the Automation API's work without a CLI; the one command the
    driver runs itself, `pulumi config set --secret` with the value on stdin, is taken
    as the CLI would take it, through the real `set_secret_config` spelling of it.
    """

    command = "pulumi"
    set_secret_config = InterruptibleCommand.set_secret_config

    def __init__(self, fake: FakeAutomation) -> None:
        self.version = VersionInfo(3, 190, 0)
        self.signals: list[str] = []
        self.running = False                      # a (hanging) CLI process is alive
        self._fake = fake
        self._signals: queue.Queue[str] = queue.Queue()

    def run(self, args: list[str], cwd: str, additional_env: Mapping[str, str],
            on_output: Any = None, on_error: Any = None, *,
            stdin: str | None = None) -> auto.CommandResult:
        options, _, positional = _split(args)
        if options[:3] != ["config", "set", "--secret"] or stdin is None or len(positional) != 1:
            raise AssertionError(f"the fake stack never starts the CLI for {args}")
        stack = options[options.index("--stack") + 1]
        self._fake.calls.append(Call("cli config set --secret", {
            "args": list(args), "stdin": stdin, "cwd": cwd, "env": dict(additional_env)}))
        # the real command writes `stdin` and a newline, which the CLI drops again
        self._fake.config.setdefault(stack, {})[positional[0]] = auto.ConfigValue(
            value=stdin, secret=True)
        return auto.CommandResult(stdout="", stderr="", code=0)

    def interrupt(self) -> None:
        self.signals.append("SIGINT")
        self._signals.put("SIGINT")

    def kill(self) -> None:
        self.signals.append("SIGKILL")
        self._signals.put("SIGKILL")

    def wait_signal(self) -> str:
        return self._signals.get(timeout=_SIGNAL_WAIT)


def _split(args: list[str]) -> tuple[list[str], str, list[str]]:
    """Options and positional arguments either side of `--`."""
    if "--" not in args:
        return args, "", []
    at = args.index("--")
    return args[:at], "--", args[at + 1:]


class FakeAutomation:
    """Stands in for the `pulumi.automation` module: its real classes, scripted stacks."""

    LocalWorkspaceOptions = auto.LocalWorkspaceOptions
    ConfigValue = auto.ConfigValue
    CommandResult = auto.CommandResult
    CommandError = auto.CommandError
    ConcurrentUpdateError = auto.ConcurrentUpdateError
    StackNotFoundError = auto.StackNotFoundError
    InvalidVersionError = auto.InvalidVersionError

    def __init__(self, *, stacks: tuple[str, ...] = (), cli_installed: bool = True,
                 legacy: bool = False) -> None:
        self.calls: list[Call] = []
        self.stacks = set(stacks)                 # stacks the backend has
        self.config: dict[str, dict[str, auto.ConfigValue]] = {}
        self.outputs: dict[str, auto.OutputValue] = {}
        self.cli = FakeCli(self)
        self.cli_installed = cli_installed
        self.version_error: str | None = None
        self.cancel_error: str | None = None      # stderr of a failing `pulumi cancel`
        self.legacy = legacy                      # a Stack from before `preview_refresh`
        self._scripts: dict[str, list[Script]] = {}

    def script(self, operation: str, *scripts: Script) -> None:
        """Queue what the next calls of `operation` (preview, up, ...) do."""
        self._scripts.setdefault(operation, []).extend(scripts)

    def command_factory(self, automation: Any) -> FakeCli:
        """The driver's `command_factory`; like `PulumiCommand()` when the CLI is missing."""
        assert automation is self
        self.calls.append(Call("command_factory", {}))
        if not self.cli_installed:
            raise FileNotFoundError(2, "No such file or directory", "pulumi")
        if self.version_error:
            raise auto.InvalidVersionError(self.version_error)
        return self.cli

    def select_stack(self, stack_name: str, project_name: str | None = None,
                     program: Any = None, work_dir: str | None = None,
                     opts: auto.LocalWorkspaceOptions | None = None) -> FakeStack:
        self._record("select_stack", stack_name=stack_name, work_dir=work_dir, opts=opts)
        if stack_name not in self.stacks:
            raise self.error(f"error: no stack named '{stack_name}' found")
        return self._stack(stack_name, opts)

    def create_stack(self, stack_name: str, project_name: str | None = None,
                     program: Any = None, work_dir: str | None = None,
                     opts: auto.LocalWorkspaceOptions | None = None) -> FakeStack:
        self._record("create_stack", stack_name=stack_name, work_dir=work_dir, opts=opts)
        if stack_name in self.stacks:
            raise self.error(f"error: stack '{stack_name}' already exists")
        self.stacks.add(stack_name)
        return self._stack(stack_name, opts)

    def create_or_select_stack(self, stack_name: str, project_name: str | None = None,
                               program: Any = None, work_dir: str | None = None,
                               opts: auto.LocalWorkspaceOptions | None = None) -> FakeStack:
        try:
            return self.select_stack(stack_name, work_dir=work_dir, opts=opts)
        except auto.StackNotFoundError:
            return self.create_stack(stack_name, work_dir=work_dir, opts=opts)

    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def call(self, name: str) -> Call:
        """The last recorded call of `name`."""
        return [call for call in self.calls if call.name == name][-1]

    def error(self, stderr: str, *, stdout: str = "", code: int = 255) -> auto.CommandError:
        """The error the real API raises for a CLI run that printed this and exited `code`."""
        return create_command_error(auto.CommandResult(stdout=stdout, stderr=stderr, code=code))

    def next_script(self, operation: str) -> Script:
        queued = self._scripts.get(operation) or []
        return queued.pop(0) if queued else Script()

    def _record(self, name: str, **args: Any) -> None:
        self.calls.append(Call(name, args))

    def _stack(self, name: str, opts: auto.LocalWorkspaceOptions | None) -> FakeStack:
        assert opts is not None and opts.pulumi_command is not None
        return (FakeLegacyStack if self.legacy else FakeStack)(self, name, opts)


class FakeLegacyStack:
    """Stands in for `pulumi.automation.Stack` (before `preview_refresh` existed)."""

    def __init__(self, fake: FakeAutomation, name: str, opts: auto.LocalWorkspaceOptions) -> None:
        self.name = name
        self._fake = fake
        self._cli: FakeCli = opts.pulumi_command  # type: ignore[assignment]

    def set_all_config(self, config: auto.ConfigMap, *, path: bool = False) -> None:
        self._record("set_all_config", config=dict(config), path=path)
        self._fake.config.setdefault(self.name, {}).update(config)

    def preview(self, expect_no_changes: bool | None = None, color: str | None = None,
                on_output: Any = None, on_error: Any = None, on_event: Any = None,
                suppress_progress: bool | None = None,
                refresh: bool | None = None) -> auto.PreviewResult:
        self._record("preview", expect_no_changes=expect_no_changes, color=color,
                     on_output=on_output, on_error=on_error, on_event=on_event,
                     suppress_progress=suppress_progress, refresh=refresh)
        stdout, counts = self._run("preview", on_output, on_event)
        if expect_no_changes and any(k != "same" and v for k, v in (counts or {}).items()):
            raise self._fake.error("error: no changes were expected but changes were proposed",
                                   stdout=stdout)
        if counts is None:
            raise RuntimeError("summary event never found")
        return auto.PreviewResult(stdout=stdout, stderr="", change_summary=counts)

    def up(self, color: str | None = None, on_output: Any = None, on_error: Any = None,
           on_event: Any = None, suppress_progress: bool | None = None,
           refresh: bool | None = None) -> auto.UpResult:
        self._record("up", color=color, on_output=on_output, on_error=on_error,
                     on_event=on_event, suppress_progress=suppress_progress, refresh=refresh)
        stdout, counts = self._run("up", on_output, on_event)
        return auto.UpResult(stdout=stdout, stderr="", summary=_update_summary("update", counts),
                             outputs=self.outputs())

    def destroy(self, color: str | None = None, on_output: Any = None, on_error: Any = None,
                on_event: Any = None,
                suppress_progress: bool | None = None) -> auto.DestroyResult:
        self._record("destroy", color=color, on_output=on_output, on_error=on_error,
                     on_event=on_event, suppress_progress=suppress_progress)
        stdout, counts = self._run("destroy", on_output, on_event)
        return auto.DestroyResult(stdout=stdout, stderr="",
                                  summary=_update_summary("destroy", counts))

    def refresh(self, preview_only: bool | None = None, color: str | None = None,
                on_output: Any = None, on_error: Any = None, on_event: Any = None,
                suppress_progress: bool | None = None) -> auto.RefreshResult:
        self._record("refresh", preview_only=preview_only, color=color, on_output=on_output,
                     on_error=on_error, on_event=on_event, suppress_progress=suppress_progress)
        stdout, _ = self._run("refresh", on_output, on_event)
        # Like the real one: the summary is the stack's last update, not this refresh.
        return auto.RefreshResult(stdout=stdout, stderr="",
                                  summary=_update_summary("update", {"create": 2}))

    def outputs(self) -> auto.OutputMap:
        self._record("outputs")
        return dict(self._fake.outputs)

    def cancel(self) -> None:
        self._record("cancel")
        if self._fake.cancel_error:
            raise self._fake.error(self._fake.cancel_error)

    def _record(self, name: str, **args: Any) -> None:
        self._fake.calls.append(Call(name, {"stack": self.name, **args}))

    def _run(self, operation: str, on_output: Any,
             on_event: Any) -> tuple[str, dict[str, int] | None]:
        script = self._fake.next_script(operation)
        if script.on_start:
            script.on_start()
        counts = None
        for event in script.events:
            if event.summary_event is not None and counts is None:
                counts = event.summary_event.resource_changes
            if on_event:
                on_event(event)
        for line in script.stdout:
            if on_output:
                on_output(line)
        stdout = "\n".join(script.stdout)
        if script.hangs:
            self._until_signal(script, stdout)
        if script.fails:
            raise self._fake.error(script.stderr, stdout=stdout)
        return stdout, counts

    def _until_signal(self, script: Script, stdout: str) -> None:
        self._cli.running = True
        try:
            while True:
                received = self._cli.wait_signal()
                if received == "SIGKILL":
                    raise self._fake.error("", stdout=stdout, code=-9)
                if not script.ignores_sigint:
                    raise self._fake.error("error: update cancelled", stdout=stdout)
        finally:
            self._cli.running = False


class FakeStack(FakeLegacyStack):
    """Stands in for `pulumi.automation.Stack` as installed (with `preview_refresh`)."""

    def preview_refresh(self, color: str | None = None, on_output: Any = None,
                        on_error: Any = None, on_event: Any = None,
                        suppress_progress: bool | None = None) -> auto.PreviewResult:
        self._record("preview_refresh", color=color, on_output=on_output, on_error=on_error,
                     on_event=on_event, suppress_progress=suppress_progress)
        stdout, counts = self._run("preview_refresh", on_output, on_event)
        if counts is None:
            raise RuntimeError("summary event never found")
        return auto.PreviewResult(stdout=stdout, stderr="", change_summary=counts)


def _update_summary(kind: str, counts: Mapping[str, int] | None) -> auto.UpdateSummary:
    return auto.UpdateSummary(kind=kind, start_time=datetime(2025, 1, 1), message="",
                         environment={}, config={}, result="succeeded",
                         end_time=datetime(2025, 1, 1), version=2,
                         resource_changes=dict(counts) if counts is not None else None)
