"""The project: the directory whose `.iacorch/` holds state and locks, and that paths stay in.

One rule, whatever directory a command runs from: `$IACORCH_PROJECT`, else the
nearest enclosing git repository, else the nearest directory already holding
`.iacorch/`, else the current directory (the runbook's own directory when the
runbook lies outside it). The home directory and `/` are never a project: a
dotfiles repository or a stray `~/.iacorch` says nothing about this work.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

STATE_DIR_NAME = ".iacorch"


def project_root(runbook: Path | None = None) -> Path:
    """The project of a runbook file (or, with None, of the current directory)."""
    explicit = os.environ.get("IACORCH_PROJECT")
    if explicit:
        return Path(explicit).expanduser().resolve()
    cwd = Path.cwd().resolve()
    start = runbook.resolve().parent if runbook is not None else cwd
    ancestors = list(_ancestors(start))
    for marker in (".git", STATE_DIR_NAME):
        for candidate in ancestors:
            if (candidate / marker).exists():
                return candidate
    return cwd if start.is_relative_to(cwd) else start


def state_dir(runbook: Path | None = None) -> Path:
    """Where state lives: `$IACORCH_HOME` when set, else `.iacorch/` at the project root."""
    home = os.environ.get("IACORCH_HOME")
    if home:
        return Path(home).expanduser().absolute()
    return project_root(runbook) / STATE_DIR_NAME


def _ancestors(start: Path) -> list[Path]:
    """`start` and its parents, stopping before the home directory or the file system root."""
    too_wide = {Path(start.anchor)}
    with contextlib.suppress(RuntimeError, KeyError):   # no home directory known
        too_wide.add(Path.home().resolve())
    found: list[Path] = []
    for candidate in (start, *start.parents):
        if candidate in too_wide:
            break
        found.append(candidate)
    return found
