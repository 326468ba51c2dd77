"""Run operations every front door shares: what the CLI (and later the server) calls.

A verb that acts on an existing run (resume, approve, reject, rollback, retry,
mark-done) rebuilds that run's plan from what the run recorded, never from the
command line: a runbook with a required var can always be moved on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iacorch.errors import IacorchError, UsageError

if TYPE_CHECKING:
    from iacorch.model.plan import Plan
    from iacorch.store.base import RunRecord


def plan_of_run(run: RunRecord) -> Plan:
    """The plan a run was started with: its runbook compiled with the run's recorded vars.

    The recorded vars are the resolved values (defaults, `--var`, var files), so no
    flag is needed again. A runbook edited since compiles to another plan hash and is
    refused, so that resume and rollback never run something other than what started.
    """
    from iacorch.runbook.compiler import compile_document
    from iacorch.runbook.source import load_document

    path = Path(run.runbook_path)
    if not path.is_file():
        raise UsageError(f"run {run.id} used {run.runbook_path}, which no longer exists",
                         hint="restore the runbook at that path to act on this run")
    document = load_document(path)
    declared = document.data.get("vars") if isinstance(document.data, dict) else None
    recorded = {name: _as_flag(value) for name, value in run.vars.items()
                if isinstance(declared, dict) and name in declared and value is not None}
    try:
        plan = compile_document(document, cli_vars=recorded)
    except IacorchError as exc:
        raise UsageError(
            f"{run.runbook_path} no longer compiles with the inputs run {run.id} recorded",
            hint=f"it changed since the run started; start a new run with `iacorch apply` "
                 f"({exc.message})") from None
    if plan.plan_hash != run.plan_hash:
        raise UsageError(
            f"{run.runbook_path} changed since run {run.id} started (plan "
            f"{run.plan_hash[:12]} -> {plan.plan_hash[:12]})",
            hint="resuming would run a different plan than the one started; start a new run "
                 "with `iacorch apply`")
    return plan


def _as_flag(value: Any) -> str:
    """A recorded value as `--var` would give it (typed values as JSON)."""
    return value if isinstance(value, str) else json.dumps(value)
