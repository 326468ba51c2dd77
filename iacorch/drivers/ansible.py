"""The Ansible driver: `ansible-playbook` with ansible-runner's event callback.

ansible-runner prepares the command and environment (`RunnerConfig.prepare()`)
and its `awx_display` callback reports job events, but iacorch's ProcessRunner
runs the child: ansible-runner's own loop stops a cancelled or timed-out job
with SIGKILL to the whole process group, while iacorch promises one SIGINT
first. Extra vars, vault password and inline inventory live in a private 0700
scratch directory outside the stage's work dir, removed when the stage ends;
the callback's raw event files go there too, and only masked copies are kept
as artifacts.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from iacorch.drivers.ansible_check import dry_run_env
from iacorch.drivers.ansible_events import EventReader, PlayRecord, masked_json, write_private
from iacorch.drivers.ansible_inputs import AnsibleActionError, extra_vars, normalise_inventory
from iacorch.drivers.base import StageContext
from iacorch.model.actions import AnsibleAction
from iacorch.model.results import ChangeSummary, ResourceChange, StageResult
from iacorch.model.status import StageStatus
from iacorch.process import ProcessResult, python_script_dirs, which, with_python_scripts

PLAYBOOK_TOOL = "ansible-playbook"
INSTALL_HINT = ("ansible-core is installed with iacorch: reinstall iacorch into the Python that "
                "runs it (pip install iacorch), or put ansible-playbook on PATH")
DESTROY_HINT = "ansible stages have no automatic destroy; give the stage a rollback playbook"
# ansible-playbook's exit codes: ansible/cli/__init__.py and TaskQueueManager.RUN_*.
_EXIT_MEANINGS = {1: "error", 2: "a host failed", 4: "a host was unreachable or a parse error",
                  5: "bad options", 8: "a play was aborted", 99: "interrupted",
                  250: "unexpected error"}
_HINT_FAILED = "the TASK lines in the stage log show which host and task failed"
_HINT_UNREACHABLE = ("check the inventory addresses and how Ansible connects "
                     "(ansible_connection, ssh keys, become)")
_HINT_ERROR = "run `ansible-playbook --syntax-check` on the playbook; the stage log has the error"


# -- pure building blocks ----------------------------------------------------------------


def playbook_options(action: AnsibleAction, *, check: bool, diff: bool,
                     extra_vars_file: Path | None, vault_password_file: Path | None) -> list[str]:
    """ansible-playbook options that RunnerConfig does not build itself."""
    flags = (("--check", check), ("--diff", diff), ("--become", action.become))
    options = [flag for flag, wanted in flags if wanted]
    if vault_password_file is not None:
        options += ["--vault-password-file", str(vault_password_file)]
    if extra_vars_file is not None:
        options += ["-e", f"@{extra_vars_file}"]
    return options


def child_env(spec_env: Mapping[str, str], action_env: Mapping[str, Any],
              secret_env: Mapping[str, str]) -> dict[str, str]:
    """The environment laid over iacorch's: runbook env, the action's env, then secrets.

    PATH starts with the directories where iacorch's own dependencies put their
    programs, so the ansible-playbook installed with iacorch is the one that runs.
    """
    env = {k: str(v) for k, v in spec_env.items()}
    env.update({k: _env_text(v) for k, v in action_env.items()})
    env.update(secret_env)
    env.setdefault("ANSIBLE_NOCOLOR", "1")
    env["PATH"] = with_python_scripts(env.get("PATH"))
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _tags(value: list[str] | str | None) -> str | None:
    return ",".join(value) if isinstance(value, list) else value


@dataclass(frozen=True, slots=True)
class Invocation:
    argv: tuple[str, ...]
    env: dict[str, str]
    cwd: str
    artifact_dir: Path


def prepare_invocation(action: AnsibleAction, *, playbook: Path, inventory: Path,
                       private_data_dir: Path, ident: str, events_dir: Path,
                       options: list[str], env: Mapping[str, str]) -> Invocation:
    """Command, environment and directories, as ansible-runner's RunnerConfig prepares them."""
    from ansible_runner.config.runner import RunnerConfig

    config = RunnerConfig(
        private_data_dir=str(private_data_dir), playbook=str(playbook),
        inventory=str(inventory), project_dir=str(playbook.parent), ident=ident,
        limit=action.limit, tags=_tags(action.tags), skip_tags=_tags(action.skip_tags),
        forks=action.forks, cmdline=shlex.join(options) if options else None,
        envvars=dict(env), quiet=True,
        fact_cache_type="none")  # runner's jsonfile cache would keep facts (ansible_env!)
    config.prepare()
    prepared = dict(config.env)
    # The callback's raw events may hold secrets: they go to the scratch dir, not artifacts.
    prepared["AWX_ISOLATED_DATA_DIR"] = str(events_dir)
    if "ANSIBLE_HOST_KEY_CHECKING" not in {**os.environ, **env}:
        del prepared["ANSIBLE_HOST_KEY_CHECKING"]   # runner turns it off; ansible.cfg decides
    return Invocation(tuple(config.command), prepared, str(config.cwd),
                      Path(config.artifact_dir))


# -- running ------------------------------------------------------------------------------


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A private 0700 directory for secrets and raw events, in RAM where the system has one."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    _sweep_orphans(Path(base or tempfile.gettempdir()))
    path = Path(tempfile.mkdtemp(prefix=f"iacorch-ansible-{os.getpid()}-", dir=base))
    try:
        (path / "job_events").mkdir(mode=0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def unsafe_yaml(variables: Mapping[str, Any]) -> str:
    """Extra vars as YAML with every text value tagged `!unsafe`.

    Ansible templates the strings of extra vars again when a play uses them; values
    from a runbook (rendered already, possibly carrying user input) must stay data.
    """
    import yaml

    class UnsafeDumper(yaml.SafeDumper):
        pass

    class Key(str):
        """A mapping key: a variable name, which stays plain."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_scalar("!unsafe", value)

    def key(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        return dumper.represent_str(str(value))

    def mapping(dumper: yaml.SafeDumper, value: dict[str, Any]) -> yaml.Node:
        return dumper.represent_dict({Key(k): v for k, v in value.items()})

    UnsafeDumper.add_representer(str, text)
    UnsafeDumper.add_representer(Key, key)
    UnsafeDumper.add_representer(dict, mapping)
    plain = json.loads(json.dumps(dict(variables), default=str))  # only JSON types remain
    return yaml.dump(plain, Dumper=UnsafeDumper, sort_keys=False, allow_unicode=True)


def _sweep_orphans(base: Path) -> None:
    """Remove scratch dirs left by an iacorch that was killed: they hold secrets in clear."""
    for leftover in base.glob("iacorch-ansible-*-*"):
        owner = leftover.name.split("-")[2]
        if not owner.isdigit() or leftover.owner() != _current_user():
            continue
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            shutil.rmtree(leftover, ignore_errors=True)
        except PermissionError:
            continue


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


@dataclass(frozen=True, slots=True)
class _Play:
    process: ProcessResult
    record: PlayRecord
    tail: tuple[str, ...]
    artifact_dir: Path


class AnsibleDriver:
    """Apply runs the playbook; plan and drift run it in check mode with diff, every task
    held in check mode (also those with `check_mode: false`, reported as not checkable)."""

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """ansible-playbook, whatever the action says: the one installed with iacorch first."""
        return [which(PLAYBOOK_TOOL, {"PATH": with_python_scripts(None)}) or PLAYBOOK_TOOL]

    def install_hint(self, tool: str) -> str:
        """Where ansible-playbook was looked for, and how iacorch's own install provides it."""
        return f"looked in {os.pathsep.join(python_script_dirs())} and along PATH; {INSTALL_HINT}"

    def plan(self, ctx: StageContext) -> StageResult:
        """A dry run: check mode with diff; details list what would change."""
        play = _run(ctx, dry_run=True)
        return play if isinstance(play, StageResult) else _summary_result(ctx, play)

    def apply(self, ctx: StageContext) -> StageResult:
        """Run the playbook; `set_stats` data and per-host stats become the outputs."""
        play = _run(ctx, dry_run=False)
        if isinstance(play, StageResult):
            return play
        outputs = play.record.set_stats()
        if "hosts" in outputs:
            ctx.log("warning: set_stats key 'hosts' is replaced by the per-host stats output")
        outputs["hosts"] = play.record.host_stats()
        shown = {k: json.dumps(v, default=str) for k, v in outputs.items()}
        sensitive = frozenset(k for k, text in shown.items() if ctx.masker.mask(text) != text)
        return replace(_summary_result(ctx, play), outputs=outputs, sensitive_outputs=sensitive)

    def destroy(self, ctx: StageContext) -> StageResult:
        """Nothing to undo automatically: an ansible stage needs an explicit rollback."""
        ctx.log(DESTROY_HINT)
        return StageResult(status=StageStatus.SKIPPED, hint=DESTROY_HINT,
                           details={"reason": DESTROY_HINT})

    def drift(self, ctx: StageContext) -> StageResult:
        """Check mode with diff: any task that would change something is drift."""
        play = _run(ctx, dry_run=True)
        if isinstance(play, StageResult):
            return play
        changed = len(play.record.changes)
        unchecked = len(play.record.not_checkable)
        ctx.log((f"drift: {changed} task result(s) would change" if changed
                 else "drift: none, every task is in sync")
                + (f"; {unchecked} task(s) not checkable (check_mode held on)" if unchecked
                   else ""))
        return replace(_summary_result(ctx, play), drifted=bool(changed))


def _run(ctx: StageContext, *, dry_run: bool) -> _Play | StageResult:
    """Run the playbook once; a failed result when it could not run or did not succeed."""
    inputs = _inputs(ctx)
    if isinstance(inputs, StageResult):
        return inputs
    action, env, playbook, inventory, variables = inputs
    private_data_dir = ctx.work_dir / "ansible"
    ident = f"{ctx.spec.operation}-{ctx.spec.attempt}"
    artifact_dir = private_data_dir / "artifacts" / ident
    shutil.rmtree(artifact_dir, ignore_errors=True)
    artifact_dir.mkdir(parents=True, mode=0o700)
    with _scratch_dir() as scratch:
        if isinstance(inventory, dict):
            write_private(artifact_dir / "inventory.json", masked_json(ctx.masker, inventory))
            inventory = write_private(scratch / "inventory.json", json.dumps(inventory))
        variables_file = variables if isinstance(variables, Path) else None
        if isinstance(variables, dict) and variables:
            write_private(artifact_dir / "extra_vars.json", masked_json(ctx.masker, variables))
            variables_file = write_private(scratch / "extra_vars.yml", unsafe_yaml(variables))
        vault_file = (write_private(scratch / "vault_password", action.vault_password)
                      if action.vault_password else None)
        check = dry_run or action.check
        options = playbook_options(action, check=check, diff=check,
                                   extra_vars_file=variables_file, vault_password_file=vault_file)
        invocation = prepare_invocation(
            action, playbook=playbook, inventory=inventory, private_data_dir=private_data_dir,
            ident=ident, events_dir=scratch, options=options, env=env)
        reader = EventReader(ctx, scratch, invocation.artifact_dir)
        try:
            result = ctx.process.run(
                invocation.argv, cwd=invocation.cwd,
                env=dry_run_env(invocation.env) if check else invocation.env,
                timeout=ctx.remaining_timeout(), cancel=ctx.cancel, masker=ctx.masker,
                on_line=reader.feed)
        finally:
            reader.close()
    write_private(artifact_dir / "command", ctx.masker.mask(shlex.join(result.argv)) + "\n")
    play = _Play(result, reader.record, tuple(reader.tail), artifact_dir)
    return _failed(ctx, play) or play


def _inputs(ctx: StageContext) -> tuple[AnsibleAction, dict[str, str], Path,
                                         Path | dict[str, Any], dict | Path] | StageResult:
    """The validated action and what it names, or a failed result saying what is wrong."""
    from pydantic import ValidationError

    try:
        action = AnsibleAction.model_validate(dict(ctx.spec.action))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'ansible'}: {e['msg']}"
                             for e in exc.errors())
        return StageResult.failure(ctx.masker.mask(f"invalid ansible action: {problems}"),
                                   hint="check the stage's `ansible:` fields after rendering")
    env = child_env(ctx.spec.env, action.env, ctx.spec.secret_env)
    if which(PLAYBOOK_TOOL, env) is None:
        return StageResult.failure(
            f"{PLAYBOOK_TOOL} was not found",
            hint=AnsibleDriver().install_hint(PLAYBOOK_TOOL))
    if action.vault_password:
        ctx.masker.add([action.vault_password])
    try:
        playbook = ctx.resolve(action.playbook)
        if not playbook.is_file():
            raise AnsibleActionError(f"playbook {action.playbook} not found (looked at {playbook})")
        inventory = normalise_inventory(action.inventory, ctx.resolve)
        variables = extra_vars(action.extra_vars, ctx.resolve)
    except AnsibleActionError as exc:
        return StageResult.failure(ctx.masker.mask(str(exc)),
                                   hint="paths in an ansible stage are relative to the runbook")
    return action, env, playbook, inventory, variables


def _failed(ctx: StageContext, play: _Play) -> StageResult | None:
    """A failed result when ansible-playbook did not finish cleanly; None when it did."""
    process = play.process
    tail = play.tail or process.tail
    if process.start_error:
        result = StageResult.failure(f"could not start {PLAYBOOK_TOOL}: {process.start_error}")
    elif process.interrupted:
        result = StageResult.failure(f"{PLAYBOOK_TOOL} was interrupted", interrupted=True,
                                     exit_code=process.exit_code, output_tail=tail)
    elif process.timed_out:
        result = StageResult.failure(
            f"{PLAYBOOK_TOOL} timed out after {ctx.spec.timeout or 0:g}s",
            hint="the last TASK line in the stage log shows where it stopped; raise `timeout`",
            exit_code=process.exit_code, output_tail=tail)
    elif process.exit_code != 0:
        code = process.exit_code
        record = play.record
        message = (record.failure_message() or "; ".join(record.errors[-3:])
                   or f"exited with code {code} ({_EXIT_MEANINGS.get(code or 0, 'unknown')})")
        statuses = {o.status for o in record.failures}
        hint = (_HINT_UNREACHABLE if "unreachable" in statuses
                else _HINT_FAILED if statuses else _HINT_ERROR)
        result = StageResult.failure(ctx.masker.mask(f"{PLAYBOOK_TOOL} failed: {message}"),
                                     hint=hint, exit_code=code, output_tail=tail)
    else:
        return None
    return replace(result, artifacts=(str(play.artifact_dir),))


def _summary_result(ctx: StageContext, play: _Play) -> StageResult:
    record = play.record
    changes = record.changes
    summary = ChangeSummary(
        change=len(changes), unchanged=sum(o.status == "ok" for o in record.outcomes),
        resources=tuple(ResourceChange(f"{o.host}: {o.task}", "update") for o in changes))
    details = {"changed": [{"host": o.host, "task": o.task, "action": o.action, "diff": o.diff}
                           for o in changes[:100]],
               "hosts": record.host_stats()}
    if record.not_checkable:
        details["not_checkable"] = record.not_checkable[:100]
    return StageResult(status=StageStatus.SUCCEEDED, changes=summary, exit_code=0,
                       details=cast(dict[str, Any], ctx.masker.mask_value(details)),
                       artifacts=(str(play.artifact_dir),))
