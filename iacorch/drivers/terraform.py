"""The Terraform driver: init, workspace, plan/apply a saved plan, destroy, drift check.

Each operation is one short sequence of Terraform commands run through the
stage's process runner. Every failure becomes a failed `StageResult` naming
the stage, what went wrong and what to do; nothing here raises on tool failure.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from iacorch.drivers.base import StageContext
from iacorch.drivers.terraform_command import (
    StackPaths,
    TerraformCommand,
    child_env,
    preflight_problem,
    route_vars,
    sha256_of,
    stack_paths,
    write_private,
)
from iacorch.drivers.terraform_output import (
    Diagnostic,
    FailedStep,
    UiStream,
    drift_findings,
    explain_failure,
    extract_json_document,
    human_lines,
    interrupted,
    is_stale_plan,
    parse_outputs,
    parse_ui_line,
    plan_changes,
    planned_outputs,
    prior_state_has_resources,
    progress_event,
    secret_strings,
    text_diagnostics,
)
from iacorch.drivers.terraform_providers import may_install_providers
from iacorch.model.actions import TerraformAction
from iacorch.model.results import ChangeSummary, StageResult
from iacorch.model.status import StageStatus
from iacorch.process import ProcessResult

_TAIL_LINES = 40
_LOCK_POLL_SECONDS = 0.05


class TerraformDriver:
    """Runs a `terraform:` action; `binary: tofu` works the same way."""

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """The binary the action names (`terraform` unless it says otherwise)."""
        return [str(action.get("binary") or "terraform")]

    def install_hint(self, tool: str) -> str:
        """Where Terraform comes from (OpenTofu for `binary: tofu`)."""
        if tool == "tofu":
            return "install OpenTofu from https://opentofu.org/docs/intro/install/"
        return "install Terraform from https://developer.hashicorp.com/terraform/install"

    def plan(self, ctx: StageContext) -> StageResult:
        """Plan into a kept saved plan the engine can apply after an approval."""
        return _StageRun.start(ctx, _plan)

    def apply(self, ctx: StageContext) -> StageResult:
        """Plan, show, apply exactly that plan, read outputs (or apply `spec.saved_plan`)."""
        return _StageRun.start(ctx, _apply)

    def destroy(self, ctx: StageContext) -> StageResult:
        """Destroy everything in the stack's workspace."""
        return _StageRun.start(ctx, _destroy)

    def drift(self, ctx: StageContext) -> StageResult:
        """Compare code and reality without changing or locking anything."""
        return _StageRun.start(ctx, _drift)


class _StageRun:
    """One stage attempt: its validated action, files, environment and log tail."""

    def __init__(self, ctx: StageContext, action: TerraformAction, paths: StackPaths) -> None:
        self.ctx = ctx
        self.action = action
        self.paths = paths
        self.stage = ctx.spec.stage_id
        self.tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self.routing = route_vars(action.vars, ctx.spec.secret_values)
        self.command = TerraformCommand(
            action=action, paths=paths,
            var_files=tuple(ctx.resolve(f) for f in action.var_files),
            has_generated_vars=bool(self.routing.file_vars))
        self.env = child_env(paths=paths, routing=self.routing,
                             spec_env=ctx.spec.env, secret_env=ctx.spec.secret_env,
                             action_env=action.env, workspace=action.workspace)
        self.version: str | None = None

    @classmethod
    def start(cls, ctx: StageContext,
              operation: Callable[[_StageRun], StageResult]) -> StageResult:
        """Check the action, prepare files, init, run `operation`, always clean up."""
        try:
            action = TerraformAction.model_validate(dict(ctx.spec.action))
        except ValidationError as exc:
            return StageResult.failure(
                f"stage {ctx.spec.stage_id}: invalid terraform action: "
                f"{ctx.masker.mask(_validation_text(exc))}",
                hint="fix the stage's `terraform:` block in the runbook")
        stack_dir = ctx.resolve(action.dir)
        problem = preflight_problem(
            action, stage=ctx.spec.stage_id, root_dir=ctx.root_dir, stack_dir=stack_dir,
            env={**os.environ, **ctx.spec.env, **{k: str(v) for k, v in action.env.items()}})
        if problem is not None:
            return StageResult.failure(problem[0], hint=problem[1])
        run = cls(ctx, action, stack_paths(stack_dir, ctx.work_dir, Path(ctx.spec.state_dir)))
        try:
            run.write_private_files()
            failed = run.init()
            return failed if failed is not None else operation(run)
        finally:
            shutil.rmtree(run.paths.private_dir, ignore_errors=True)

    # -- logging -----------------------------------------------------------------

    def log(self, line: str) -> None:
        masked = self.ctx.masker.mask(line)
        self.tail.append(masked)
        self.ctx.on_line(masked)

    def stream_handler(self, stream: UiStream) -> Callable[[str], None]:
        """Turns raw `-json` lines into masked human lines, progress events and state."""
        def on_line(line: str) -> None:
            message = parse_ui_line(line)
            if message is None:
                if line.strip():
                    self.log(line.rstrip("\r\n"))
                return
            stream.feed(message)
            for text in human_lines(message):
                self.log(text)
            event = progress_event(message)
            if event is not None:
                self.ctx.on_progress(self.ctx.masker.mask_value(event))  # type: ignore[arg-type]
        return on_line

    # -- running commands ------------------------------------------------------

    def run(self, argv: list[str], on_line: Callable[[str], None]) -> ProcessResult:
        """Run one command raw (lines unmasked) so JSON survives; callers mask what they log."""
        if self.ctx.cancel.interrupted:
            return ProcessResult(tuple(argv), None, 0.0, interrupted=True)
        self.log("$ " + " ".join(argv))
        return self.ctx.process.run(
            argv, env=self.env, timeout=self.ctx.remaining_timeout(),
            cancel=self.ctx.cancel, masker=None, on_line=on_line)

    def stream(self, step: str, argv: list[str],
               ok_codes: tuple[int, ...] = (0,)) -> tuple[UiStream, StageResult | None]:
        """Run a `-json` command; a failed result when it did not exit with one of `ok_codes`."""
        stream = UiStream()
        result = self.run(argv, self.stream_handler(stream))
        self.version = self.version or stream.version
        if result.exit_code in ok_codes and not (result.interrupted or result.timed_out):
            return stream, None
        return stream, self.failure(step, result, stream.diagnostics)

    def read_json(self, step: str, argv: list[str]) -> tuple[Any, StageResult | None]:
        """Run a command that prints one JSON document; never logs the (secret-bearing) data."""
        lines: list[str] = []
        result = self.run(argv, lines.append)
        if not result.ok:
            for line in lines[-_TAIL_LINES:]:
                self.log(line)
            return None, self.failure(step, result, text_diagnostics(lines))
        try:
            return extract_json_document(lines), None
        except ValueError:
            return None, StageResult.failure(
                f"stage {self.stage}: `terraform {step}` printed no JSON document",
                hint="run it by hand in the stack directory to see what it printed",
                exit_code=result.exit_code, output_tail=tuple(self.tail))

    # -- steps shared by every operation ------------------------------------------

    def write_private_files(self) -> None:
        """The 0700 directory, the tfvars file and backend config, each 0600."""
        self.paths.private_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.paths.private_dir, 0o700)
        self.paths.plugin_cache.mkdir(parents=True, exist_ok=True)
        if self.routing.file_vars:
            write_private(self.paths.var_file, self.routing.file_vars)
        if self.action.backend_config:
            write_private(self.paths.backend_file, self.action.backend_config)
        if self.routing.env_vars:
            self.log("passing secret-bearing vars through the environment: "
                     + ", ".join(self.routing.secret_names))

    def init(self) -> StageResult | None:
        """`terraform init`, then select or create the workspace.

        An init that may install providers holds the host-wide init lock alone (the
        plugin cache is not concurrency safe); one that needs only the built-in
        provider shares it with others like it."""
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            self.log(line)

        alone = may_install_providers(self.paths.stack_dir, env=self.env,
                                      backend_config=bool(self.action.backend_config))
        with _host_lock(self.paths.init_lock, self.ctx, shared=not alone) as acquired:
            if not acquired and self.ctx.cancel.interrupted:
                return self.interrupted("init")
            if not acquired:
                return StageResult.failure(
                    f"stage {self.stage}: timed out waiting for another stage's terraform init",
                    hint=f"inits share a host-wide lock ({self.paths.init_lock}) because the "
                         "plugin cache is not concurrency safe; raise the stage's `timeout:`",
                    output_tail=tuple(self.tail))
            result = self.run(self.command.init(), on_line)
        if not result.ok:
            return self.failure("init", result, text_diagnostics(lines))
        if not self.action.workspace:
            return None
        lines.clear()
        result = self.run(self.command.select_workspace(self.action.workspace), on_line)
        if not result.ok:
            return self.failure("workspace select", result, text_diagnostics(lines))
        return None

    def outputs(self) -> tuple[dict[str, Any], frozenset[str], StageResult | None]:
        """`output -json`; sensitive values go to the masker before anything else is logged."""
        document, failed = self.read_json("output", self.command.output())
        if failed is not None:
            return {}, frozenset(), failed
        values, sensitive = parse_outputs(document or {})
        self.ctx.masker.add(s for name in sensitive for s in secret_strings(values[name]))
        return values, sensitive, None

    def show_plan(self, plan_file: Path) -> tuple[Mapping[str, Any], ChangeSummary,
                                                  StageResult | None]:
        """`show -json <plan>` and its changes; planned sensitive values go to the masker."""
        document, failed = self.read_json("show", self.command.show(plan_file))
        if failed is not None:
            return {}, ChangeSummary(), failed
        planned = planned_outputs(document)
        self.ctx.masker.add(s for name in planned.sensitive
                            for s in secret_strings(planned.values[name]))
        changes = plan_changes(document)
        changed_outputs = f" ({', '.join(changes.outputs)})" if changes.outputs else ""
        self.log(f"Plan summary: {changes}{changed_outputs}, {changes.unchanged} resources "
                 "unchanged")
        return document, changes, None

    # -- failures ------------------------------------------------------------------

    def failed_step(self, step: str) -> FailedStep:
        return FailedStep(stage=self.stage, step=step, binary=self.action.binary,
                          stack_dir=str(self.paths.stack_dir), workspace=self.action.workspace,
                          timeout=self.ctx.spec.timeout,
                          approved_plan=bool(self.ctx.spec.saved_plan))

    def interrupted(self, step: str) -> StageResult:
        why = interrupted(self.failed_step(step))
        return StageResult.failure(why.error, hint=why.hint, interrupted=True,
                                   output_tail=tuple(self.tail))

    def failure(self, step: str, result: ProcessResult,
                diagnostics: list[Diagnostic]) -> StageResult:
        """A failed command as a failed result with the most useful message and hint."""
        why = explain_failure(self.failed_step(step), result, diagnostics)
        return StageResult.failure(self.ctx.masker.mask(why.error), hint=why.hint,
                                   exit_code=result.exit_code, output_tail=tuple(self.tail),
                                   interrupted=why.interrupted)

    def details(self, **extra: Any) -> dict[str, Any]:
        return {"workspace": self.action.workspace or "default",
                "stack_dir": str(self.paths.stack_dir), "terraform_version": self.version,
                **extra}


# -- the four operations ---------------------------------------------------------------


def _apply(run: _StageRun) -> StageResult:
    approved = run.ctx.spec.saved_plan
    plan_file = Path(approved) if approved else run.paths.plan_file
    if approved and not plan_file.is_file():
        return StageResult.failure(
            f"stage {run.stage}: the approved plan {plan_file} is missing; nothing was applied",
            hint="run `iacorch plan` again and approve the new plan")
    if not approved:
        _, failed = run.stream("plan", run.command.plan(plan_file))
        if failed is not None:
            return _with_details(failed, {"nothing_applied": True})
        os.chmod(plan_file, 0o600)
    plan_sha256 = sha256_of(plan_file)
    document, changes, failed = run.show_plan(plan_file)
    if failed is not None:
        return _with_details(failed, {"nothing_applied": True})
    stack_existed = prior_state_has_resources(document)
    applied, failed = run.stream("apply", run.command.apply_plan(plan_file))
    if failed is not None:
        stale = bool(approved) and is_stale_plan(applied.diagnostics)
        if stale:
            plan_file.unlink(missing_ok=True)
        return _with_details(failed, run.details(saved_plan_sha256=plan_sha256,
                                                 stack_existed=stack_existed,
                                                 nothing_applied=stale))
    if approved:
        plan_file.unlink(missing_ok=True)     # applied: its variable values are no use now
    outputs, sensitive, failed = run.outputs()
    if failed is not None:
        return failed
    done = applied.summary("apply")
    return StageResult(
        status=StageStatus.SUCCEEDED, outputs=outputs, sensitive_outputs=sensitive,
        changes=changes,
        details=run.details(saved_plan_sha256=plan_sha256, stack_existed=stack_existed,
                            applied={"add": done.add, "change": done.change,
                                     "destroy": done.destroy}))


def _plan(run: _StageRun) -> StageResult:
    plan_file = run.paths.kept_plan
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.unlink(missing_ok=True)
    _, failed = run.stream("plan", run.command.plan(plan_file))
    if failed is not None:
        return failed
    os.chmod(plan_file, 0o600)
    document, changes, failed = run.show_plan(plan_file)
    if failed is not None:
        plan_file.unlink(missing_ok=True)
        return failed
    planned = planned_outputs(document)
    applied, applied_sensitive, failed = run.outputs()
    if failed is not None:
        plan_file.unlink(missing_ok=True)
        return failed
    # downstream stages are planned with the values this plan gives; only where the apply
    # alone will tell does the last applied value stand in
    stand_ins = {name: applied[name] for name in planned.unknown if name in applied}
    if planned.unknown:
        run.log("outputs known only after apply: " + ", ".join(
            f"{name} ({'its last applied value stands in' if name in stand_ins else 'no value'})"
            for name in sorted(planned.unknown)))
    return StageResult(
        status=StageStatus.SUCCEEDED, outputs={**stand_ins, **planned.values},
        sensitive_outputs=planned.sensitive | (applied_sensitive & stand_ins.keys()),
        unknown_outputs=planned.unknown, changes=changes, saved_plan=str(plan_file),
        artifacts=(str(plan_file),),
        details=run.details(saved_plan_sha256=sha256_of(plan_file),
                            stack_existed=prior_state_has_resources(document)))


def _destroy(run: _StageRun) -> StageResult:
    stream, failed = run.stream("destroy", run.command.destroy())
    if failed is not None:
        return failed
    done = stream.summary("apply")
    changes = ChangeSummary(destroy=done.destroy, resources=tuple(stream.planned))
    return StageResult(status=StageStatus.SUCCEEDED, changes=changes, details=run.details())


def _drift(run: _StageRun) -> StageResult:
    refresh, failed = run.stream("plan -refresh-only", run.command.plan(
        detailed_exitcode=True, refresh_only=True, lock=False), ok_codes=(0, 2))
    if failed is not None:
        return failed
    config, failed = run.stream("plan", run.command.plan(
        detailed_exitcode=True, lock=False), ok_codes=(0, 2))
    if failed is not None:
        return failed
    findings = drift_findings(refresh, config)
    drifted = bool(findings)
    run.log("drift: " + (f"{len(findings)} difference(s) between code and reality"
                         if drifted else "in sync"))
    return StageResult(status=StageStatus.SUCCEEDED, drifted=drifted,
                       changes=config.summary("plan"),
                       details=run.details(findings=findings))


# -- helpers ---------------------------------------------------------------------------


@contextmanager
def _host_lock(lock_path: Path, ctx: StageContext, *, shared: bool) -> Iterator[bool]:
    """Hold a host-wide file lock, shared or alone; False when interrupted or out of time
    while waiting.

    Everyone passes through a gate first, and one who needs the lock alone keeps the gate
    shut while waiting for it: the shared holders drain and no new one overtakes it
    (flock itself would let overlapping shared holders keep it waiting forever).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path.with_suffix(".gate"), "a") as gate, open(lock_path, "a") as lock:
        if not _wait_for(gate, fcntl.LOCK_EX, ctx):
            yield False
            return
        try:
            held = _wait_for(lock, fcntl.LOCK_SH if shared else fcntl.LOCK_EX, ctx)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        if not held:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _wait_for(handle: IO[str], mode: int, ctx: StageContext) -> bool:
    while True:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if ctx.cancel.wait(_LOCK_POLL_SECONDS) or ctx.remaining_timeout() == 0.0:
                return False


def _with_details(result: StageResult, details: Mapping[str, Any]) -> StageResult:
    return StageResult(status=result.status, error=result.error, hint=result.hint,
                       exit_code=result.exit_code, output_tail=result.output_tail,
                       interrupted=result.interrupted, details=details)


def _validation_text(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'action'}: {e['msg']}"
                     for e in exc.errors())
