"""An event a runbook's trigger received, and the var values it gives the run it starts.

Every source (a webhook, an SQS message, an S3 notification) turns what arrived into a
TriggerEvent; what starts the run is the same for all of them. Event fields are data:
they fill the trigger's `vars` templates, but a `{{ ... }}` inside an event field is
text, never rendered (templates render once, in the sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iacorch.errors import UsageError
from iacorch.model.runbook import Trigger
from iacorch.runbook.templating import TemplateProblem, Templates

if TYPE_CHECKING:
    from iacorch.engine.runner import RunOutcome
    from iacorch.engine.runtime import Runtime


@dataclass(frozen=True, slots=True)
class TriggerEvent:
    """One delivery of one trigger: its idempotency key and what it carried."""

    runbook: str                       # the runbook's path inside the project
    trigger: str                       # the trigger's name
    delivery_id: str                   # X-GitHub-Delivery, the SQS MessageId, ...
    data: Mapping[str, Any] = field(default_factory=dict)   # `event` in the templates

    @property
    def source(self) -> str:
        """The key deliveries are counted under (Store.claim_delivery)."""
        return f"{self.runbook}#{self.trigger}"


_TEMPLATES = Templates()


def event_vars(trigger: Trigger, event: TriggerEvent) -> dict[str, Any]:
    """The trigger's `vars`, rendered with `event` as the only name templates see."""
    try:
        return dict(_TEMPLATES.render(dict(trigger.vars), {"event": event.data}))
    except TemplateProblem as problem:
        raise UsageError(f"trigger `{trigger.name}`: {problem}",
                         hint=problem.hint or "the trigger's vars may use `event.*` only"
                         ) from None


@dataclass(frozen=True, slots=True)
class TriggeredRun:
    """What a delivery did: the run it started, or (`duplicate`) the one its first copy did."""

    run_id: str
    duplicate: bool
    outcome: RunOutcome | None = None     # None for a duplicate


def runbook_in_project(root: Path, runbook: str) -> Path:
    """The runbook file `runbook` names inside the project `root`; UsageError if it names
    anything else (an absolute path, `..` out of the project, not a YAML file)."""
    relative = Path(runbook)
    if relative.is_absolute() or ".." in relative.parts or relative.suffix not in (".yaml",
                                                                                   ".yml"):
        raise UsageError(f"{runbook!r} is not a runbook path inside the project",
                         hint="give the runbook's path relative to the project root, "
                              "e.g. plans/webapp.yaml")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise UsageError(f"no runbook {runbook} in the project",
                         hint="give the runbook's path relative to the project root")
    return path


def find_trigger(root: Path, runbook: str, name: str) -> tuple[Path, Trigger]:
    """The runbook file and its trigger `name`; UsageError naming the triggers it has."""
    from iacorch.runbook.compiler import validate_model
    from iacorch.runbook.source import load_document

    path = runbook_in_project(root, runbook)
    triggers = {t.name: t for t in validate_model(load_document(path)).triggers}
    if name not in triggers:
        raise UsageError(f"{runbook} has no trigger `{name}`",
                         hint=f"its triggers: {', '.join(triggers) or '(none)'}")
    return path, triggers[name]


def start_from_event(event: TriggerEvent, runtime: Runtime, *, root: Path,
                     lock_timeout: float = 0.0, run_id: str | None = None) -> TriggeredRun:
    """Start the run a trigger event asks for and drive it to its outcome.

    The one entry point of every trigger source. The delivery is claimed in the commit
    that creates the run, so however often an event arrives (and however many copies
    race), it starts one run. `root` is the project the event's runbook path is in.
    """
    from iacorch.engine.journal import DeliveryClaimed
    from iacorch.engine.launch import check_tools, compile_plan, var_flag
    from iacorch.engine.notify import RunEndNotifier
    from iacorch.engine.run_state import RunOptions
    from iacorch.engine.runs import new_run_id, plan_run, start_run
    from iacorch.model.status import Operation

    path, trigger = find_trigger(root, event.runbook, event.trigger)
    if trigger.action == "drift":
        raise UsageError(f"trigger `{trigger.name}`: drift checks cannot be triggered yet",
                         hint="use `action: plan` or `apply`, or a schedule for drift")
    values = {name: var_flag(value) for name, value in event_vars(trigger, event).items()}
    plan = compile_plan(path, values, (), runtime.policy, operation=trigger.action)
    check_tools(plan)
    RunEndNotifier.attach(plan, runtime)
    run_id = run_id or new_run_id(runtime.clock())
    delivery = (event.source, event.delivery_id)
    try:
        if trigger.action == "plan":
            outcome = plan_run(plan, runtime, RunOptions(operation=Operation.PLAN),
                               run_id=run_id, delivery=delivery)
        else:
            outcome = start_run(plan, runtime, RunOptions(), lock_timeout=lock_timeout,
                                run_id=run_id, delivery=delivery)
    except DeliveryClaimed as claimed:
        return TriggeredRun(claimed.first_run_id, duplicate=True)
    return TriggeredRun(run_id, duplicate=False, outcome=outcome)
