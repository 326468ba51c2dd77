"""Shell stages: a bash script or an argv list, outputs as JSON lines in $IACORCH_OUTPUT."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Mapping
from typing import Any

from iacorch.drivers.base import StageContext
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import StageStatus
from iacorch.process import ProcessResult, which

OUTPUT_FILE = "outputs.jsonl"
_OUTPUT_HINT = ("write one JSON object per line to $IACORCH_OUTPUT, for example: "
                "echo '{\"url\": \"http://...\"}' >> \"$IACORCH_OUTPUT\"")


def outputs_path(work_dir: str) -> str:
    """$IACORCH_OUTPUT: beside the stage's work directory, which a quiet stage never creates."""
    return f"{work_dir.rstrip(os.sep)}.{OUTPUT_FILE}"


def _fresh_output_file(path: str) -> None:
    """Make $IACORCH_OUTPUT's directory, and remove what an earlier attempt wrote there."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):   # a stat: a mkdir that finds the directory costs more
        os.makedirs(directory, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a retry must not see the last attempt's outputs


_BASH_FOUND: dict[str, str] = {}


def _bash(path: str) -> str | None:
    """bash on this PATH: found once per PATH value, not once per stage (a miss is not
    remembered, so a bash installed meanwhile is used by the next stage)."""
    if path not in _BASH_FOUND:
        found = which("bash", {"PATH": path})
        if found is None:
            return None
        _BASH_FOUND[path] = found
    return _BASH_FOUND[path]


def env_value(value: Any) -> str:
    """How a runbook value looks in a child's environment: YAML-ish scalars, JSON otherwise."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def command(action: Mapping[str, Any], bash: str | None) -> list[str]:
    """The argv for an action: the script under bash (or sh), or the argv list as text."""
    if action.get("argv") is not None:
        return [str(item) for item in action["argv"]]
    script = str(action["run"])
    if bash is None:
        return ["/bin/sh", "-e", "-c", script]
    return [bash, "-eo", "pipefail", "-c", script]


def child_env(spec: StageSpec, action: Mapping[str, Any], output_path: str) -> dict[str, str]:
    """The overlay on os.environ: run env, secret env, the stage's env, then ours (they win)."""
    return {
        **{k: env_value(v) for k, v in spec.env.items()},
        **{k: env_value(v) for k, v in spec.secret_env.items()},
        **{str(k): env_value(v) for k, v in (action.get("env") or {}).items()},
        "IACORCH_OUTPUT": output_path,
        "IACORCH_RUN_ID": spec.run_id,
        "IACORCH_STAGE": spec.stage_id,
        "IACORCH_ATTEMPT": str(spec.attempt),
    }


def parse_outputs(text: str) -> tuple[dict[str, Any], str | None]:
    """Merge the JSON objects of `text`, one per line, in order; or say which line is wrong."""
    outputs: dict[str, Any] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return outputs, f"line {number}: invalid JSON: {exc.msg} (column {exc.colno})"
        if not isinstance(value, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean",
                    type(None): "null"}.get(type(value), "a number")
            return outputs, f"line {number}: expected a JSON object, got {kind}"
        outputs.update(value)
    return outputs, None


def masked_outputs(text: str, masker: Masker) -> str:
    """The output lines as they may stay on disk: each JSON line decoded before masking,
    so that a secret is found whatever escaping the script's JSON used."""
    lines = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            lines.append(masker.mask(line))
            continue
        lines.append(masker.mask(json.dumps(masker.mask_value(value), ensure_ascii=False)))
    return "".join(f"{line}\n" for line in lines)


def _keep_masked(output_path: str, masker: Masker) -> str:
    """Read what the script wrote to $IACORCH_OUTPUT and leave only a masked copy behind:
    the file stays in the state directory, where secrets must not."""
    try:
        with open(output_path, encoding="utf-8", errors="replace") as file:
            text = file.read()
    except FileNotFoundError:
        return ""
    if masker.secrets:
        with open(output_path, "w", encoding="utf-8") as file:
            file.write(masked_outputs(text, masker))
    return text


def exit_hint(exit_code: int, what: str) -> str:
    """What an exit code usually means, for the person reading the failure."""
    if exit_code == 127:
        return f"{what} ran a command that was not found (exit 127); check PATH and spelling"
    if exit_code == 126:
        return f"{what} ran a file that is not executable (exit 126)"
    if 128 < exit_code < 128 + signal.NSIG:
        name = signal.Signals(exit_code - 128).name
        return f"{what} was killed by {name}; the last lines of output are in the stage log"
    return f"{what} failed; the last lines of output are in the stage log"


class ShellDriver:
    """Runs `shell.run` under `bash -eo pipefail` or `shell.argv` without a shell."""

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """bash for a script; the program itself for an argv list."""
        argv = action.get("argv")
        if argv is not None:
            return [str(argv[0])] if argv else []
        return ["bash"]

    def install_hint(self, tool: str) -> str:
        """A program a runbook names: the runbook's author knows where it comes from."""
        if "/" in tool:
            return f"{tool} is relative to the runbook's directory; check that it exists"
        return f"install {tool}, or run only other stages with --target/--only"

    def plan(self, ctx: StageContext) -> StageResult:
        """Show what would run; shell stages are never run by a plan."""
        action = ctx.spec.action
        if action.get("argv") is not None:
            would_run: Any = [ctx.masker.mask(str(a)) for a in action["argv"]]
        else:
            would_run = ctx.masker.mask(str(action["run"]))
        return StageResult(status=StageStatus.SUCCEEDED, details={"would_run": would_run})

    def apply(self, ctx: StageContext) -> StageResult:
        """Run the script or argv; outputs are the JSON lines it wrote to $IACORCH_OUTPUT."""
        action = ctx.spec.action
        if action.get("argv") is not None and not action["argv"]:
            return StageResult.failure("shell.argv is empty",
                                       hint="give the program and its arguments as a list")
        output_path = outputs_path(ctx.spec.work_dir)
        try:
            _fresh_output_file(output_path)
        except OSError as exc:
            return StageResult.failure(
                f"cannot prepare {output_path}: {exc.strerror}; nothing was run",
                hint="free disk space and inodes there (df -h; df -i), then `iacorch resume`")
        env = child_env(ctx.spec, action, output_path)
        argv = command(action, _bash(env.get("PATH", os.environ.get("PATH", os.defpath)))
                       if action.get("run") is not None else None)
        cwd = ctx.resolve(action["cwd"]) if action.get("cwd") else ctx.spec.root_dir
        result = ctx.run(argv, cwd=cwd, env=env)
        text = _keep_masked(output_path, ctx.masker)
        failed = self._failure(ctx, action, result)
        if failed is not None:
            return failed
        outputs, problem = parse_outputs(text)
        if problem is not None:
            return StageResult.failure(f"{output_path}: {problem}", hint=_OUTPUT_HINT,
                                       exit_code=0, output_tail=result.tail)
        sensitive = frozenset(name for name, value in outputs.items()
                              if ctx.masker.mask_value(value) != value)
        return StageResult(status=StageStatus.SUCCEEDED, outputs=outputs,
                           sensitive_outputs=sensitive, exit_code=0, output_tail=result.tail)

    def destroy(self, ctx: StageContext) -> StageResult:
        """Nothing to destroy: what a script did is undone by the stage's rollback."""
        return StageResult(status=StageStatus.SKIPPED, details={
            "reason": "shell stages have no destroy; give the stage a rollback"})

    def drift(self, ctx: StageContext) -> StageResult:
        """Nothing to compare: a script has no desired state."""
        return StageResult(status=StageStatus.SKIPPED, details={
            "reason": "shell stages have no drift check: a script declares no desired state"})

    def _failure(self, ctx: StageContext, action: Mapping[str, Any],
                 result: ProcessResult) -> StageResult | None:
        what = "the command" if action.get("argv") is not None else "the script"
        if result.start_error is not None:
            hint = ("shell.cwd is relative to the runbook's directory"
                    if "working directory" in result.start_error
                    else "install it, or fix PATH or the path to the program")
            return StageResult.failure(result.start_error, hint=hint)
        if result.interrupted:
            return StageResult.failure("killed" if result.killed else "interrupted",
                                       exit_code=result.exit_code, output_tail=result.tail,
                                       interrupted=True)
        if result.timed_out:
            return StageResult.failure(
                f"timed out after {ctx.spec.timeout or 0:g}s",
                hint=f"{what} did not finish in time; raise the stage's timeout or find "
                     "what hangs in the stage log",
                exit_code=result.exit_code, output_tail=result.tail)
        if result.exit_code != 0:
            code = result.exit_code or 0
            return StageResult.failure(f"exited with code {code}", hint=exit_hint(code, what),
                                       exit_code=code, output_tail=result.tail)
        return None
