"""Static checks of one stage: its shape, approval gate rules, dangerous environment
variables and paths.

Each check yields `Finding`s (message, document path, hint) for the compiler to locate.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from iacorch.model.registry import driver_names, driver_spec
from iacorch.model.runbook import APPROVAL_FIELDS, STAGE_ID, Stage
from iacorch.model.status import StageKind
from iacorch.runbook.templating import is_template


class Finding(NamedTuple):
    """One problem before it is located: `key=True` points at the key of `path`, not its value."""

    message: str
    path: tuple[Any, ...]
    hint: str
    key: bool = False


# Variables that make a tool load code or take flags nobody reviewed in the runbook.
DANGEROUS_ENV = ("TF_CLI_ARGS", "TF_CLI_ARGS_*", "TF_CLI_CONFIG_FILE", "LD_PRELOAD",
                 "LD_LIBRARY_PATH", "LD_AUDIT", "DYLD_*", "PYTHONPATH", "PYTHONSTARTUP",
                 "PYTHONHOME", "PERL5LIB", "PERL5OPT", "RUBYOPT", "NODE_OPTIONS", "BASH_ENV",
                 "ENV", "ANSIBLE_*_PLUGINS", "ANSIBLE_CALLBACKS_ENABLED",
                 "ANSIBLE_*_PLUGIN_PATH", "ANSIBLE_LIBRARY", "ANSIBLE_MODULE_UTILS",
                 "ANSIBLE_CONFIG", "ANSIBLE_PYTHON_INTERPRETER", "ANSIBLE_COLLECTIONS_PATH*",
                 "ANSIBLE_ROLES_PATH", "ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_*_PATH",
                 "PYTHONUSERBASE", "PULUMI_HOME", "GIT_SSH_COMMAND", "PATH")

_DANGEROUS_ENV = re.compile("|".join(fnmatch.translate(p) for p in DANGEROUS_ENV))

_NUMBERS = {2: "two", 3: "three", 4: "four", 5: "five"}


def check_shape(section: str, stage_id: str, stage: Stage) -> Iterator[Finding]:
    """The stage id, its kind, exactly one action (none for a gate), fields of its kind."""
    where = (section, stage_id)
    if not STAGE_ID.match(stage_id):
        yield Finding(f"stage id {stage_id!r} may only hold letters, digits, `_` and `-`",
                      where, "rename the stage, e.g. `web-tier`", key=True)
    if section == "stages" and stage.kind is None:
        yield Finding(f"stage `{stage_id}` has no `kind`", where,
                      "add `kind:` provision, configure, deploy, verify or approval", key=True)
    if section == "stages" and stage.kind is StageKind.FINALLY:
        yield Finding(f"stage `{stage_id}` is `kind: finally` under `stages:`",
                      (*where, "kind"), "move it under a top-level `finally:` section (its "
                      "stages run once the run has ended), or give it another kind")
    if section == "finally":
        yield from _check_final(stage_id, stage)
    actions = stage.action_types
    if stage.is_approval:
        if actions:
            yield Finding(f"approval gate `{stage_id}` cannot also run `{actions[0]}`",
                          (*where, actions[0]),
                          "move the action into its own stage that `needs` the gate", key=True)
        yield from _check_gate(where, stage)
        return
    if not actions:
        yield Finding(f"stage `{stage_id}` has no action", where,
                      f"add exactly one of {', '.join(driver_names())}", key=True)
    elif len(actions) > 1:
        names = ", ".join(f"`{a}`" for a in actions[:-1]) + f" and `{actions[-1]}`"
        count = _NUMBERS[len(actions)]
        yield Finding(f"stage `{stage_id}` has {count} actions, {names}",
                      (*where, actions[1]), f"split it into {count} stages, one per "
                      "action", key=True)
    for name in APPROVAL_FIELDS:
        if getattr(stage, name) is not None:
            yield Finding(f"`{name}` belongs to approval gates, but `{stage_id}` is "
                          f"`kind: {stage.kind or 'finally'}`", (*where, name),
                          "set `kind: approval` or remove the key", key=True)


def _check_final(stage_id: str, stage: Stage) -> Iterator[Finding]:
    """`finally:` stages start together once the run has ended: no gates, loops or order."""
    where = ("finally", stage_id)
    if stage.is_approval:
        yield Finding(f"`finally` stage `{stage_id}` cannot be an approval gate", (*where, "kind"),
                      "nobody waits for a gate after the run has ended; remove `kind: approval`",
                      key=True)
    if stage.for_each is not None:
        yield Finding(f"`for_each` is not supported in `finally` stage `{stage_id}`",
                      (*where, "for_each"), "loop inside the action, e.g. in its shell script",
                      key=True)
    if stage.needs:
        yield Finding(f"`needs` has no effect in `finally` stage `{stage_id}`",
                      (*where, "needs"), "finally stages start together once the run has "
                      "ended; remove `needs`", key=True)


def _check_gate(where: tuple[str, str], stage: Stage) -> Iterator[Finding]:
    approvers = stage.approvers or []
    if stage.require is not None and approvers and stage.require > len(set(approvers)):
        yield Finding(f"gate `{where[1]}` requires {stage.require} distinct approvers, but "
                      f"`approvers` names only {len(set(approvers))}", (*where, "require"),
                      "lower `require` or add approvers")
    seen: set[str] = set()
    for index, name in enumerate(approvers):
        if name in seen:
            yield Finding(f"approver `{name}` is listed twice in gate `{where[1]}`",
                          (*where, "approvers", index), "list each person once")
        seen.add(name)


def check_env(path: tuple[Any, ...], env: Mapping[str, Any] | None,
              allowed: Sequence[str]) -> Iterator[Finding]:
    """A stage `env:` may not set loader or flag variables unless `allow_env` names them."""
    for name in env or {}:
        if name in allowed:
            continue
        if _DANGEROUS_ENV.match(str(name)):
            yield Finding(f"stage env sets `{name}`, which can make the tool load code or take "
                          "flags that the runbook does not show", (*path, "env", name),
                          f"if this is intended, add `allow_env: [{name}]` at the top of the "
                          "runbook", key=True)


def check_paths(path: tuple[Any, ...], action_type: str, action: Mapping[str, Any],
                root: Path, project: Path) -> Iterator[Finding]:
    """Static paths (the driver's `path_fields`) must exist and stay inside the project,
    symlinks resolved."""
    for field in driver_spec(action_type).path_fields:
        value = action.get(field)
        entries = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, entry in entries:
            if not isinstance(entry, str) or is_template(entry):
                continue
            where = (*path, field) if index is None else (*path, field, index)
            try:
                resolved = (root / entry).resolve()
                exists = resolved.exists()
            except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL, too long
                yield Finding(f"`{field}` {entry!r} cannot be resolved to a path", where,
                              "check the path for symlink loops and stray characters")
                continue
            if not resolved.is_relative_to(project):
                yield Finding(f"`{field}` {entry!r} resolves to {resolved}, outside the "
                              f"project {project}", where, "keep stacks and playbooks inside "
                              "the project (symlinks are followed)")
            elif not exists:
                yield Finding(f"`{field}` {entry!r} does not exist (looked for {resolved})",
                              where, _path_hint(root, entry))


def _path_hint(root: Path, entry: str) -> str:
    """Did-you-mean from the files next to where the missing path was looked for."""
    relative = "paths are relative to the runbook's directory"
    try:
        siblings = os.listdir((root / entry).parent)
    except OSError:
        return relative
    close = difflib.get_close_matches(Path(entry).name, siblings, n=1)
    if not close:
        return relative
    suggestion = str(Path(entry).parent / close[0])
    return f"did you mean {suggestion!r}? P{relative[1:]}"
