"""The Pulumi driver: preview, up, destroy and drift checks through the Automation API.

`pulumi.automation` is slow to import and optional, so it is imported inside
functions only and reached through `automation=` (the module itself, or a fake
of it in tests). The CLI runs through `InterruptibleCommand`, which starts it in
its own session: iacorch decides which signal it gets, and when (DESIGN.md §5).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from iacorch.drivers.base import StageContext
from iacorch.model.actions import PulumiAction
from iacorch.model.results import ChangeSummary, StageResult
from iacorch.model.status import StageStatus

from .pulumi_cli import TAIL_LINES, InterruptibleCommand, Watcher
from .pulumi_events import ANSI, EngineEventLog, change_summary, op_name

MISSING_CLI = ("the pulumi CLI is not on PATH; "
               "install it from https://www.pulumi.com/docs/install/")
_NO_CHANGES_EXPECTED = "no changes were expected"

CommandFactory = Callable[[Any], Any]


def _import_automation() -> Any:
    import pulumi.automation

    return pulumi.automation


def config_text(value: Any) -> str:
    """A rendered config value as Pulumi stores it: text, with structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


_PASSPHRASE_VARS = ("PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE")
_PASSPHRASE_SECRET = "IACORCH_SECRET_PULUMI_CONFIG_PASSPHRASE"   # a runbook secret of that name


def local_passphrase_file(backend_dir: Path) -> Path:
    """The passphrase of iacorch's local backend: random, made once, readable by us only.

    A fixed, documented passphrase would encrypt Pulumi.<stack>.yaml secrets
    with a key anyone can read in our source; a random one next to the state
    it protects keeps the no-account default without that leak.
    """
    path = backend_dir / "passphrase"
    if path.exists():
        return path
    backend_dir.mkdir(parents=True, exist_ok=True)
    draft = backend_dir / f".passphrase.{os.getpid()}.{threading.get_ident()}"
    with os.fdopen(os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(secrets.token_urlsafe(32))
    try:
        os.link(draft, path)        # atomic: a parallel stage that lost the race uses the winner's
    except FileExistsError:
        pass
    finally:
        draft.unlink()
    return path


def workspace_env(ctx: StageContext, action: PulumiAction) -> tuple[dict[str, str], str | None]:
    """The CLI's environment, and the backend URL when iacorch chose it (the local default).

    Later layers win: automation defaults, the runbook's env, the action's env,
    secrets; then `backend`. Without one, state goes to a file backend under
    the state dir, so no account or `pulumi login` is needed.
    """
    env = {"PULUMI_SKIP_UPDATE_CHECK": "true", **ctx.spec.env,
           **{key: config_text(value) for key, value in action.env.items()},
           **ctx.spec.secret_env}
    if action.backend or "PULUMI_BACKEND_URL" in env:
        env["PULUMI_BACKEND_URL"] = action.backend or env["PULUMI_BACKEND_URL"]
        return env, None
    backend_dir = Path(ctx.spec.state_dir).resolve() / "pulumi"
    backend_dir.mkdir(parents=True, exist_ok=True)
    env["PULUMI_BACKEND_URL"] = backend = f"file://{backend_dir}"
    if _PASSPHRASE_SECRET in env:
        env.setdefault("PULUMI_CONFIG_PASSPHRASE", env[_PASSPHRASE_SECRET])
    if not any(name in env or name in os.environ for name in _PASSPHRASE_VARS):
        passphrase = local_passphrase_file(backend_dir)
        ctx.masker.add([passphrase.read_text(encoding="utf-8")])
        env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return env, backend


def _leaves(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _leaves(item)]
    return [] if value is None else [value if isinstance(value, str) else json.dumps(value)]


class _Stage:
    """One stage attempt on one stack: its workspace, output streams and error mapping."""

    def __init__(self, ctx: StageContext, action: PulumiAction, automation: Any, command: Any,
                 env: tuple[dict[str, str], str | None], watcher: Watcher) -> None:
        self.ctx, self.action, self.auto, self.command = ctx, action, automation, command
        self.watcher = watcher
        self.project_dir = ctx.resolve(action.dir)
        self.env, self.backend = env
        self.stack: Any = None
        self.created = False
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.events: EngineEventLog | None = None     # of the running operation

    def open(self, *, create: bool) -> bool:
        """Select the stack (creating it when `create`) and set its config; False if absent."""
        opts = self.auto.LocalWorkspaceOptions(
            work_dir=str(self.project_dir), env_vars=self.env, pulumi_command=self.command)
        where = {"work_dir": str(self.project_dir), "opts": opts}
        try:
            self.stack = self.auto.select_stack(self.action.stack, **where)
        except self.auto.StackNotFoundError:
            if not create:
                return False
            self.stack = self.auto.create_stack(self.action.stack, **where)
            self.created = True
        texts = {key: config_text(value) for key, value in self.action.config.items()}
        plain = {key: text for key, text in texts.items() if not self._is_secret(text)}
        if plain:
            self.stack.set_all_config({key: self.auto.ConfigValue(value=text, secret=False)
                                       for key, text in plain.items()})
        for key, text in texts.items():
            if key not in plain:     # encrypted by Pulumi, and never in a command line
                self.command.set_secret_config(self.stack.name, key, text,
                                               str(self.project_dir), self.env)
        return True

    def _is_secret(self, text: str) -> bool:
        return any(secret and secret in text for secret in self.ctx.spec.secret_values)

    def line(self, text: str) -> None:
        masked = self.ctx.masker.mask(ANSI.sub("", text))
        self.tail.append(masked)
        self.ctx.on_line(masked)

    def streams(self, events: EngineEventLog, *, refresh: bool = False) -> dict[str, Any]:
        """Keyword arguments of an operation: masked output, events, no colour or dots."""
        self.events = events
        streams = {"on_output": self.line, "on_error": self.line, "on_event": events,
                   "color": "never", "suppress_progress": True}
        return {**streams, "refresh": True} if refresh else streams

    def outputs(self, values: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
        """Stack outputs in clear for downstream stages; secret ones named and masked."""
        outputs = {name: value.value for name, value in values.items()}
        sensitive = {name for name, value in values.items() if value.secret}
        self.ctx.masker.add(leaf for name in sensitive for leaf in _leaves(outputs[name]))
        sensitive |= {name for name, value in outputs.items()
                      if any(self.ctx.masker.mask(leaf) != leaf for leaf in _leaves(value))}
        return outputs, frozenset(sensitive)

    def details(self, **extra: Any) -> dict[str, Any]:
        return {"stack": self.action.stack, "project_dir": str(self.project_dir),
                "backend": self.ctx.masker.mask(self.env["PULUMI_BACKEND_URL"]),
                "stack_created": self.created, **extra}

    def stopped(self, operation: str) -> StageResult | None:
        """The result when the watcher stopped this stage, else None."""
        reason = self.watcher.reason
        if reason is None:
            return None
        hint = ("the CLI was killed; run `pulumi refresh --stack "
                f"{self.action.stack}` in {self.project_dir} to settle pending operations"
                if self.watcher.killed else "the CLI stopped cleanly and saved its state")
        after = f" after {self.ctx.spec.timeout:g}s" if reason == "timed out" else ""
        return StageResult.failure(f"pulumi {operation} {reason}{after}", hint=hint,
                                   output_tail=tuple(self.tail),
                                   interrupted=reason == "interrupted")

    def failed(self, operation: str, exc: Exception) -> StageResult:
        """A CommandError as a failed result: masked, with the cause and what to do next."""
        text = self.ctx.masker.mask(str(exc))
        code = re.search(r"code: (-?\d+)", text)
        exit_code = int(code.group(1)) if code else None
        if self.watcher.killed and self.stack is not None:
            self._release_lock()
        if (stopped := self.stopped(operation)) is not None:
            return stopped
        unlock = (f"cd {self.project_dir} && "
                  + (f"PULUMI_BACKEND_URL={self.backend} " if self.backend else "")
                  + f"pulumi cancel --stack {self.action.stack}")
        if isinstance(exc, self.auto.ConcurrentUpdateError):
            return StageResult.failure(
                f"stack {self.action.stack} is locked by another update",
                hint=f"wait for it; if no update is running, release the lock: {unlock}",
                exit_code=exit_code, output_tail=tuple(self.tail))
        causes = [*(self.events.errors if self.events else ()),
                  *(ln.strip() for ln in text.splitlines() if ln.strip().startswith("error:")),
                  *text.strip().splitlines()[-1:]]
        cause = causes[0] if causes else "no output"
        hint = ("set PULUMI_CONFIG_PASSPHRASE (or _FILE) in the action's env, from a runbook "
                "secret; iacorch's local backend keeps its own in <state dir>/pulumi/passphrase"
                if "passphrase" in text.lower() else "the stage log has pulumi's full output")
        return StageResult.failure(f"pulumi {operation} failed: {cause}", hint=hint,
                                   exit_code=exit_code, output_tail=tuple(self.tail))

    def _release_lock(self) -> None:
        # A killed CLI leaves the stack locked: `pulumi cancel` is what releases it.
        try:
            self.stack.cancel()
            self.ctx.log(f"pulumi: released the lock of stack {self.action.stack}")
        except self.auto.CommandError as exc:
            self.ctx.log(f"pulumi: could not release the lock: {exc}")


class PulumiDriver:
    """Pulumi stacks through the Automation API: preview, up, destroy, drift checks."""

    def __init__(self, automation: Any = None, *, command_factory: CommandFactory | None = None,
                 interrupt_grace: float | None = None) -> None:
        """`automation`: the `pulumi.automation` module (imported on first use) or a fake;
        `command_factory(automation)`: the CLI wrapper handed to every workspace;
        `interrupt_grace`: seconds between SIGINT and kill (default: the process runner's)."""
        self._automation = automation
        self._command_factory = command_factory or InterruptibleCommand.create
        self._grace = interrupt_grace

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """The Automation API drives the `pulumi` CLI, which must be on PATH."""
        return ["pulumi"]

    def install_hint(self, tool: str) -> str:
        """The CLI is not a Python package: it comes from Pulumi's installer."""
        return "install the pulumi CLI from https://www.pulumi.com/docs/install/"

    def plan(self, ctx: StageContext) -> StageResult:
        """`pulumi preview`; the changes are saved so that apply can prove it does the same."""
        return self._run(ctx, "preview", self._plan)

    def apply(self, ctx: StageContext) -> StageResult:
        """`pulumi preview` (the change summary), then `pulumi up`; outputs from the stack."""
        return self._run(ctx, "up", self._apply)

    def destroy(self, ctx: StageContext) -> StageResult:
        """`pulumi destroy`; a stack that does not exist has nothing to destroy."""
        return self._run(ctx, "destroy", self._destroy)

    def drift(self, ctx: StageContext) -> StageResult:
        """Program vs state (`preview --expect-no-changes`), then state vs reality (refresh
        preview); drifted when either finds a change. Never writes state."""
        return self._run(ctx, "drift check", self._drift)

    def _run(self, ctx: StageContext, operation: str,
             body: Callable[[_Stage], StageResult]) -> StageResult:
        try:
            action = PulumiAction.model_validate(ctx.spec.action)
        except ValidationError as exc:
            return StageResult.failure(f"invalid pulumi action: {ctx.masker.mask(str(exc))}",
                                       hint="fields: dir, stack, config, backend, env, refresh")
        project_dir = ctx.resolve(action.dir)
        if not any((project_dir / f"Pulumi.{ext}").is_file() for ext in ("yaml", "yml", "json")):
            return StageResult.failure(f"no Pulumi project (Pulumi.yaml) in {project_dir}",
                                       hint="`dir` is relative to the runbook's directory")
        if ctx.cancel.interrupted:
            return StageResult.failure(f"pulumi {operation} interrupted before it started",
                                       interrupted=True)
        automation = self._automation or _import_automation()
        try:
            command = self._command_factory(automation)
        except FileNotFoundError:
            return StageResult.failure(MISSING_CLI, hint="then run the stage again")
        except subprocess.CalledProcessError as exc:
            return StageResult.failure(f"`pulumi version` failed: {exc}",
                                       hint="check the pulumi installation")
        except automation.InvalidVersionError as exc:
            return StageResult.failure(f"unsupported pulumi CLI: {exc}",
                                       hint="upgrade it: https://www.pulumi.com/docs/install/")
        try:
            env = workspace_env(ctx, action)
        except OSError as exc:
            return StageResult.failure(f"cannot prepare the local Pulumi backend: {exc}",
                                       hint=f"check that {ctx.spec.state_dir} is writable")
        grace = self._grace if self._grace is not None else ctx.process.sigint_grace
        with Watcher(ctx, command, grace) as watcher:
            stage = _Stage(ctx, action, automation, command, env, watcher)
            try:
                return body(stage)
            except automation.CommandError as exc:
                return stage.failed(operation, exc)
            except (OSError, RuntimeError) as exc:    # the Automation API's own failures
                return StageResult.failure(f"pulumi {operation} failed: "
                                           f"{ctx.masker.mask(str(exc))}",
                                           output_tail=tuple(stage.tail))

    def _plan(self, stage: _Stage) -> StageResult:
        stage.open(create=True)
        events = EngineEventLog(stage.ctx)
        preview = stage.stack.preview(**stage.streams(events, refresh=stage.action.refresh))
        changes = change_summary(preview.change_summary, events.changes())
        saved = stage.ctx.work_dir / "pulumi-plan.json"
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(_plan_record(stage.action.stack, events)), encoding="utf-8")
        return StageResult(StageStatus.SUCCEEDED, changes=changes, saved_plan=str(saved),
                           details=stage.details())

    def _apply(self, stage: _Stage) -> StageResult:
        stage.open(create=True)
        planned = EngineEventLog(stage.ctx)
        preview = stage.stack.preview(**stage.streams(planned, refresh=stage.action.refresh))
        changes = change_summary(preview.change_summary, planned.changes())
        if (stopped := stage.stopped("up")) is not None:
            return stopped
        if (mismatch := _check_saved_plan(stage, planned)) is not None:
            return mismatch
        events = EngineEventLog(stage.ctx, total=len(changes.resources))
        result = stage.stack.up(**stage.streams(events, refresh=stage.action.refresh))
        outputs, sensitive = stage.outputs(result.outputs)
        counts = events.summary or result.summary.resource_changes or {}
        applied = {op_name(k): v for k, v in counts.items()}
        return StageResult(StageStatus.SUCCEEDED, outputs=outputs, sensitive_outputs=sensitive,
                           changes=changes, details=stage.details(applied=applied))

    def _destroy(self, stage: _Stage) -> StageResult:
        if not stage.open(create=False):
            stage.ctx.log(f"pulumi: stack {stage.action.stack} does not exist; nothing to destroy")
            return StageResult(StageStatus.SUCCEEDED, changes=ChangeSummary(),
                               details=stage.details(stack_missing=True))
        events = EngineEventLog(stage.ctx)
        result = stage.stack.destroy(**stage.streams(events))
        counts = events.summary or result.summary.resource_changes   # this run's own events
        return StageResult(StageStatus.SUCCEEDED, changes=change_summary(counts, events.changes()),
                           details=stage.details())

    def _drift(self, stage: _Stage) -> StageResult:
        if not stage.open(create=False):
            missing = {"address": stage.action.stack, "action": "missing", "source": "state"}
            return StageResult(StageStatus.SUCCEEDED, drifted=True,
                               details=stage.details(stack_missing=True, findings=[missing]))
        program = EngineEventLog(stage.ctx)
        try:
            # without --refresh: program vs state here, state vs reality below
            preview = stage.stack.preview(expect_no_changes=True, **stage.streams(program))
            counts = preview.change_summary
        except stage.auto.CommandError as exc:
            if stage.watcher.reason or _NO_CHANGES_EXPECTED not in str(exc):
                raise
            counts = program.summary             # changes found: the events tell which
        if (stopped := stage.stopped("drift check")) is not None:
            return stopped
        reality = EngineEventLog(stage.ctx)
        if hasattr(stage.stack, "preview_refresh"):
            refreshed = stage.stack.preview_refresh(**stage.streams(reality)).change_summary
        else:                                    # Automation API before preview_refresh
            stage.stack.refresh(preview_only=True, **stage.streams(reality))
            refreshed = reality.summary
        findings = [{"address": c.address, "action": c.action, "source": source}
                    for source, log in (("program", program), ("refresh", reality))
                    for c in log.changes()]
        changes = change_summary(counts, program.changes())
        drifted = changes.has_changes or change_summary(refreshed).has_changes or bool(findings)
        return StageResult(StageStatus.SUCCEEDED, changes=changes, drifted=drifted,
                           details=stage.details(findings=findings))


def _plan_record(stack: str, events: EngineEventLog) -> dict[str, Any]:
    return {"stack": stack, "changes": events.record()}


def _check_saved_plan(stage: _Stage, events: EngineEventLog) -> StageResult | None:
    """After an approval, refuse to apply changes other than the approved ones."""
    path = stage.ctx.spec.saved_plan
    if not path:
        return None
    try:
        approved = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return StageResult.failure(f"the saved plan {path} cannot be read: {exc}",
                                   hint="run the plan again")
    if approved == _plan_record(stage.action.stack, events):
        return None
    return StageResult.failure("pulumi would now make other changes than the approved plan",
                               hint="run `iacorch plan` again and have its changes approved",
                               output_tail=tuple(stage.tail))
