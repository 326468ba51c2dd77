"""Static safety checks on stage actions: dangerous environment variables and paths.

Each check returns (message, document path, hint) triples for the compiler to locate.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from iacorch.model.status import ActionType
from iacorch.runbook.templating import is_template

Finding = tuple[str, tuple[Any, ...], str | None]

# Variables that make a tool load code or take flags nobody reviewed in the runbook.
DANGEROUS_ENV = ("TF_CLI_ARGS", "TF_CLI_ARGS_*", "TF_CLI_CONFIG_FILE", "LD_PRELOAD",
                 "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_*", "PYTHONPATH", "PYTHONSTARTUP",
                 "PYTHONHOME", "PERL5LIB", "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "BASH_ENV",
                 "ENV", "ANSIBLE_*_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED",
                 "ANSIBLE_*_PLUGIN_PATH", "ANSIBLE_LIBRARY", "ANSIBLE_MODULE_UTILS",
                 "ANSIBLE_CONFIG", "PULUMI_HOME", "GIT_SSH_COMMAND", "PATH")

# Fields that name files or directories, relative to the runbook.
PATH_FIELDS: dict[ActionType, tuple[str, ...]] = {
    ActionType.TERRAFORM: ("dir", "var_files"),
    ActionType.PULUMI: ("dir",),
    ActionType.ANSIBLE: ("playbook",),
}


def check_env(path: tuple[Any, ...], env: Mapping[str, Any] | None,
              allowed: Sequence[str]) -> Iterator[Finding]:
    """A stage `env:` may not set loader or flag variables unless `allow_env` names them."""
    for name in env or {}:
        if name in allowed:
            continue
        if any(fnmatch.fnmatchcase(str(name), pattern) for pattern in DANGEROUS_ENV):
            yield (f"stage env sets `{name}`, which can make the tool load code or take flags "
                   "that the runbook does not show", (*path, name),
                   f"if this is intended, add `allow_env: [{name}]` at the top of the runbook")


def project_root(runbook_dir: Path) -> Path:
    """The closest ancestor holding `.git` or `.iacorch`; paths may not leave it."""
    for candidate in (runbook_dir, *runbook_dir.parents):
        if (candidate / ".git").exists() or (candidate / ".iacorch").is_dir():
            return candidate
    return runbook_dir.parent if runbook_dir.name == "plans" else runbook_dir


def check_paths(path: tuple[Any, ...], action_type: ActionType, action: Mapping[str, Any],
                root: Path, project: Path) -> Iterator[Finding]:
    """Static paths must exist and stay inside the project, symlinks resolved."""
    for field in PATH_FIELDS.get(action_type, ()):
        value = action.get(field)
        entries = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, entry in entries:
            if not isinstance(entry, str) or is_template(entry):
                continue
            where = (*path, field) if index is None else (*path, field, index)
            resolved = (root / entry).resolve()
            if not resolved.is_relative_to(project):
                yield (f"`{field}` {entry!r} resolves to {resolved}, outside the project "
                       f"{project}", where, "keep stacks and playbooks inside the project "
                       "(symlinks are followed)")
            elif not resolved.exists():
                yield (f"`{field}` {entry!r} does not exist (looked for {resolved})", where,
                       "paths are relative to the runbook's directory")
