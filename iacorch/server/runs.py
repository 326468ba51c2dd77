"""Starting and resuming runs for a request, and finding a stage's log files."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from iacorch.engine.launch import check_tools, compile_plan, var_flag
from iacorch.engine.launcher import Launched
from iacorch.engine.notify import RunEndNotifier
from iacorch.engine.operations import plan_of_run
from iacorch.engine.run_state import RunOptions
from iacorch.engine.runs import new_run_id, plan_run, resume_run, start_run
from iacorch.engine.runtime import Runtime
from iacorch.engine.triggered import runbook_in_project
from iacorch.errors import UsageError
from iacorch.model.status import Operation
from iacorch.server.app import Server
from iacorch.server.auth import Identity


def start(server: Server, runbook: str, values: Mapping[str, Any], operation: str,
          who: Identity, *, lock_timeout: float = 0.0) -> Launched:
    """Compile `runbook` (a path inside the project) with `values` and start it as `who`."""
    path = runbook_in_project(server.settings.root, runbook)
    plan = compile_plan(path, {name: var_flag(value) for name, value in values.items()}, (),
                        server.launcher.policy, operation=operation)
    check_tools(plan)
    run_id = new_run_id(server.store.now())
    server.store.append_audit("run_requested", run_id=run_id, actor=who.user,
                              data={"runbook": runbook, "operation": operation, "via": who.via})

    def work(runtime: Runtime) -> Any:
        RunEndNotifier.attach(plan, runtime)
        if operation == "plan":
            return plan_run(plan, runtime, RunOptions(operation=Operation.PLAN), run_id=run_id)
        return start_run(plan, runtime, RunOptions(), run_id=run_id, lock_timeout=lock_timeout)

    return server.launcher.launch(run_id, who.user, work)


def resume(server: Server, run_id: str, who: Identity) -> Launched:
    """Continue a run where it stopped, as `who`, from the plan it was started with."""
    run = server.store.get_run(run_id)
    plan = plan_of_run(run, server.launcher.policy)
    check_tools(plan)
    if server.launcher.driving(run.id):
        raise UsageError(f"run {run.id} is running in this server",
                         hint=f"follow it: GET /api/runs/{run.id}")
    def work(runtime: Runtime) -> Any:
        RunEndNotifier.attach(plan, runtime)
        return resume_run(plan, run, runtime)

    return server.launcher.launch(run.id, who.user, work)


def log_files(server: Server, run_id: str, stage: str) -> list[Path]:
    """The log of every attempt of a stage that started (UsageError for any other name)."""
    run = server.store.get_run(run_id)
    if stage not in server.store.stage_records(run.id):
        known = sorted(server.store.stage_records(run.id))
        raise UsageError(f"run {run.id} has no stage `{stage}` that started",
                         hint=f"stages that started: {', '.join(known) or '(none yet)'}")
    return sorted((server.state_dir / "runs" / run.id / stage).glob("attempt-*.log"))
