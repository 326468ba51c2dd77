"""What every front door does before a run: compile a runbook, check its tools, and open a
writable store with its state directory. The CLI and `iacorch serve` both call these;
neither needs click, the main thread or signal handlers.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iacorch.errors import StoreError, ToolMissingError, UsageError

if TYPE_CHECKING:
    from iacorch.model.plan import Plan
    from iacorch.policy.guard import PolicyGuard
    from iacorch.store.base import Store


SHARED_DIR_VARIABLE = "IACORCH_SHARED_DIR"   # logs and saved plans of a PostgreSQL store


def var_flag(value: Any) -> str:
    """A var value as `--var` would give it: strings as they are, typed values as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def compile_plan(runbook: str | Path, values: Mapping[str, str],
                 var_files: Sequence[str] = (), policy: PolicyGuard | None = None, *,
                 operation: str = "validate", concurrency: int | None = None) -> Plan:
    """Compile a runbook file with var values given as `--var` text (and var files); with
    the organisation's policy, enforce it: the plan then carries the gates it adds."""
    from iacorch.runbook.compiler import compile_runbook

    check_var_files(var_files)
    plan = compile_runbook(str(runbook), cli_vars=dict(values), var_files=tuple(var_files))
    if policy is None:
        return plan
    return policy.enforce(plan, operation=operation, concurrency=concurrency)


def check_var_files(var_files: Sequence[str]) -> None:
    """UsageError for a var file that is not there."""
    # The runbook's own path is checked by the loader, which tells a missing file from a
    # directory; a var file gets its own words so the message does not say "runbook".
    for path in var_files:
        if not Path(path).is_file():
            raise UsageError(f"--var-file {path}: no such file",
                             hint="give the path of a YAML file of var values")


def check_tools(plan: Plan) -> None:
    """ToolMissingError naming the first tool the plan needs that this machine lacks."""
    from iacorch.drivers import missing_tools

    for missing in missing_tools(plan):
        stages = missing.stages
        who = (f"stage {stages[0]} needs" if len(stages) == 1
               else f"stages {', '.join(stages)} need")
        raise ToolMissingError(f"`{missing.tool}` was not found, and {who} it; nothing was run",
                               hint=missing.hint)


def state_dir_for(store_url: str | None, runbook: Path | None = None) -> Path:
    """Where run logs and saved plans go: beside a store's state.db; for a PostgreSQL
    store, $IACORCH_SHARED_DIR (one directory every host mounts at the same path), else
    the project's state directory (enough while one host runs and inspects everything)."""
    from iacorch.project import state_dir
    from iacorch.store import is_postgres_url

    if store_url and is_postgres_url(store_url):
        shared = os.environ.get(SHARED_DIR_VARIABLE)
        return Path(shared).expanduser().absolute() if shared else state_dir(runbook).resolve()
    if store_url and not store_url.startswith("memory:"):
        path = Path(store_url.removeprefix("sqlite://"))
        return path.resolve().parent
    return state_dir(runbook).resolve()


def make_state_dir(state_dir: Path) -> Path:
    """Create the state directory, or say why a run cannot keep its records there."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {state_dir}: {exc.strerror}",
                         hint="runs need a writable place for their records: run from a "
                              "writable checkout, or set $IACORCH_HOME or --store") from None
    return state_dir


def open_for_runs(store_url: str | None, runbook: Path | None = None) -> tuple[Store, Path]:
    """The store runs are recorded in, and its state directory; StoreError if read-only."""
    from iacorch.store import open_store

    state_dir = make_state_dir(state_dir_for(store_url, runbook))
    store = open_store(store_url, runbook)
    if store.read_only:
        raise StoreError(f"the state store in {state_dir} is read-only here: runs cannot be "
                         "recorded, so nothing was started",
                         hint="inspection works (runs, show, logs, audit verify); to run, use a "
                              "writable checkout, or set $IACORCH_HOME or --store")
    return store, state_dir
