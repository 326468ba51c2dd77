"""What a Terraform stage runs: its files, argv and environment, built without side effects.

Variable values never appear on a command line (where `ps` shows them): plain
values go to a generated tfvars file, values that contain a secret go to the
child's environment as `TF_VAR_<name>` and are never written to disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iacorch.drivers.terraform_output import install_url
from iacorch.model.actions import TerraformAction

TFVARS_NAME = "iacorch.tfvars.json"


@dataclass(frozen=True, slots=True)
class StackPaths:
    """Where one stage attempt keeps its Terraform files.

    Everything holding values in clear (tfvars, backend config, the saved plan,
    TF_DATA_DIR with the backend's cached config) lives in `private_dir`, a 0700
    directory removed when the stage ends. Only the plan of a `plan` operation,
    which the engine applies after an approval, is kept, as `kept_plan`.
    """

    stack_dir: Path
    private_dir: Path
    plugin_cache: Path
    kept_plan: Path

    @property
    def data_dir(self) -> Path:
        return self.private_dir / "tfdata"

    @property
    def var_file(self) -> Path:
        return self.private_dir / TFVARS_NAME

    @property
    def backend_file(self) -> Path:
        return self.private_dir / "backend.json"

    @property
    def plan_file(self) -> Path:
        return self.private_dir / "tfplan"

    @property
    def init_lock(self) -> Path:
        return self.plugin_cache.parent / "init.lock"


def stack_paths(stack_dir: Path, work_dir: Path, state_dir: Path) -> StackPaths:
    """The per-attempt layout: private files under the stage's work dir, a shared plugin cache.

    TF_DATA_DIR is per stage (its work dir is per run and stage), so two stages
    on one stack dir, such as a for_each over workspaces, never share a
    selected workspace or a backend cache and can run in parallel.
    """
    work_dir, state_dir = work_dir.absolute(), state_dir.absolute()  # the child may chdir
    return StackPaths(stack_dir=stack_dir.absolute(), private_dir=work_dir / "terraform",
                      plugin_cache=state_dir / "terraform" / "plugin-cache",
                      kept_plan=work_dir / "tfplan")


@dataclass(frozen=True, slots=True)
class VarRouting:
    """Runbook vars split by where they may safely go."""

    file_vars: Mapping[str, Any]      # written to the 0600 tfvars file
    env_vars: Mapping[str, str]       # TF_VAR_<name> -> value, environment only

    @property
    def secret_names(self) -> list[str]:
        return sorted(name.removeprefix("TF_VAR_") for name in self.env_vars)


def route_vars(variables: Mapping[str, Any], secret_values: Iterable[str]) -> VarRouting:
    """Send each var to the tfvars file, or to `TF_VAR_<name>` when it holds a secret."""
    secrets = [s for s in secret_values if s]
    file_vars: dict[str, Any] = {}
    env_vars: dict[str, str] = {}
    for name, value in variables.items():
        if any(secret in text for text in _strings_in(value) for secret in secrets):
            env_vars[f"TF_VAR_{name}"] = env_var_value(value)
        else:
            file_vars[name] = value
    return VarRouting(file_vars=file_vars, env_vars=env_vars)


def env_var_value(value: Any) -> str:
    """A value as Terraform reads TF_VAR_: strings raw, anything else as JSON (valid HCL)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def child_env(*, paths: StackPaths, routing: VarRouting, spec_env: Mapping[str, str],
              secret_env: Mapping[str, str], action_env: Mapping[str, Any],
              workspace: str | None) -> dict[str, str]:
    """What every Terraform command of a stage gets on top of the worker's environment.

    Later layers win: automation defaults, the runbook's env, the action's env,
    secrets, secret vars, then what must stay per stage for parallel stages not
    to collide: the data dir, and the workspace the action selects.
    """
    env = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0",
           "TF_PLUGIN_CACHE_DIR": str(paths.plugin_cache)}
    env.update(spec_env)
    env.update({k: env_var_value(v) for k, v in action_env.items()})
    env.update(secret_env)
    env.update(routing.env_vars)
    env["TF_DATA_DIR"] = str(paths.data_dir)
    if workspace:
        env["TF_WORKSPACE"] = ""          # set, it makes `workspace select` fail; empty is unset
    return env


@dataclass(frozen=True, slots=True)
class TerraformCommand:
    """Builds the argv of every Terraform command one stage runs."""

    action: TerraformAction
    paths: StackPaths
    var_files: tuple[Path, ...]       # the action's var_files, resolved against the runbook
    has_generated_vars: bool

    def init(self) -> list[str]:
        argv = self._terraform("init", "-input=false", "-no-color")
        if self.action.backend_config:
            argv.append(f"-backend-config={self.paths.backend_file}")
        return argv

    def select_workspace(self, name: str) -> list[str]:
        # `--`: a workspace rendered from a var such as "-destroy" is a name, not a flag
        return self._terraform("workspace", "select", "-or-create", "-no-color", "--", name)

    def plan(self, out: Path | None = None, *, detailed_exitcode: bool = False,
             refresh_only: bool = False, lock: bool = True) -> list[str]:
        argv = self._terraform("plan", "-input=false", "-no-color", "-json")
        if out is not None:
            argv.append(f"-out={out}")
        if detailed_exitcode:
            argv.append("-detailed-exitcode")
        if refresh_only:
            argv.append("-refresh-only")
        if not lock:
            argv.append("-lock=false")
        return argv + self._parallelism() + self._targets() + self._var_args()

    def show(self, plan_file: Path) -> list[str]:
        return self._terraform("show", "-json", "-no-color", str(plan_file))

    def apply_plan(self, plan_file: Path) -> list[str]:
        # A saved plan carries its variables; Terraform refuses -var-file here.
        return self._terraform("apply", "-input=false", "-no-color", "-json",
                               *self._parallelism(), str(plan_file))

    def destroy(self) -> list[str]:
        return self._terraform("apply", "-destroy", "-auto-approve", "-input=false",
                               "-no-color", "-json", *self._parallelism(), *self._targets(),
                               *self._var_args())

    def output(self) -> list[str]:
        return self._terraform("output", "-json", "-no-color")

    def _terraform(self, *words: str) -> list[str]:
        # -chdir, not the child's working directory: ProcessRunner starts a child that runs
        # where we run with posix_spawn, one elsewhere with a fork of this process (Python
        # 3.11 cannot chdir in posix_spawn); measured in docs/performance.md (Distributed).
        return [self.action.binary, f"-chdir={self.paths.stack_dir}", *words]

    def _var_args(self) -> list[str]:
        # The generated file comes last: the runbook's vars win over its var_files.
        files: Sequence[Path] = self.var_files
        if self.has_generated_vars:
            files = [*files, self.paths.var_file]
        return [f"-var-file={path}" for path in files]

    def _targets(self) -> list[str]:
        return [f"-target={target}" for target in self.action.targets]

    def _parallelism(self) -> list[str]:
        if self.action.parallelism is None:
            return []
        return [f"-parallelism={self.action.parallelism}"]


def preflight_problem(action: TerraformAction, *, stage: str, root_dir: Path, stack_dir: Path,
                      env: Mapping[str, str]) -> tuple[str, str] | None:
    """(error, hint) for what a person must fix in the runbook or on disk, before any command."""
    fix = f"`dir:` is relative to the runbook's directory {root_dir}; fix it in stage {stage}"
    if not stack_dir.exists():
        return f"stage {stage}: terraform dir {action.dir!r} does not exist ({stack_dir})", fix
    if not stack_dir.is_dir():
        return f"stage {stage}: terraform dir {action.dir!r} is not a directory ({stack_dir})", fix
    if not os.access(stack_dir, os.R_OK | os.X_OK):
        return (f"stage {stage}: terraform dir {stack_dir} is not readable by this user",
                f"give uid {os.getuid()} read access (chmod u+rx) or run as the dir's owner")
    if not any(stack_dir.glob("*.tf")) and not any(stack_dir.glob("*.tf.json")):
        return f"stage {stage}: terraform dir {stack_dir} holds no .tf files", fix
    for var_file in action.var_files:
        if not (root_dir / var_file).is_file():
            return (f"stage {stage}: var file {var_file!r} not found ({root_dir / var_file})",
                    f"`var_files:` are relative to the runbook's directory {root_dir}")
    if shutil.which(action.binary, path=env.get("PATH")) is None:
        return (f"stage {stage}: {action.binary} not found on PATH; install it from "
                f"{install_url(action.binary)}",
                f"or set `binary:` in stage {stage} to the program's full path")
    return None


def write_private(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON readable by this user only, from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _strings_in(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in (*_strings_in(k), *_strings_in(v))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings_in(item)]
    return [] if value is None else [json.dumps(value)]
