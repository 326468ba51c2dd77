"""An event a runbook's trigger received, and the var values it gives the run it starts.

Every source (a webhook, an SQS message, an S3 notification) turns what arrived into a
TriggerEvent; what starts the run is the same for all of them. Event fields are data:
they fill the trigger's `vars` templates, but a `{{ ... }}` inside an event field is
text, never rendered (templates render once, in the sandbox).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.plan import Plan
from iacorch.model.runbook import Runbook, Trigger
from iacorch.model.status import Operation
from iacorch.runbook.templating import TemplateProblem, Templates

from .run_state import RunOptions
from .runs import BegunRun, begin_run
from .runtime import Runtime


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
# what a trigger's `action` starts (drift runs are the scheduler's and the server's)
RUN_ACTIONS = {"apply": Operation.APPLY, "plan": Operation.PLAN}


def event_vars(trigger: Trigger, event: TriggerEvent) -> dict[str, Any]:
    """The trigger's `vars`, rendered with `event` as the only name templates see."""
    try:
        return dict(_TEMPLATES.render(dict(trigger.vars), {"event": event.data}))
    except TemplateProblem as problem:
        raise UsageError(f"trigger `{trigger.name}`: {problem}",
                         hint=problem.hint or "the trigger's vars may use `event.*` only"
                         ) from None


def find_trigger(runbook: Runbook, name: str) -> Trigger:
    """The runbook's trigger called `name`."""
    for trigger in runbook.triggers:
        if trigger.name == name:
            return trigger
    raise UsageError(f"the runbook has no trigger `{name}`",
                     hint="triggers: " + (", ".join(t.name for t in runbook.triggers) or "none"))


def triggered_plan(event: TriggerEvent) -> tuple[Trigger, Plan]:
    """The event's trigger, and its runbook compiled with the vars the event gives."""
    from iacorch.runbook.compiler import compile_document, validate_model
    from iacorch.runbook.source import load_document

    document = load_document(event.runbook)
    trigger = find_trigger(validate_model(document), event.trigger)
    return trigger, compile_document(document, file_vars=event_vars(trigger, event))


def begin_triggered_run(event: TriggerEvent, runtime_for: Callable[[Plan], Runtime], *,
                        lock_timeout: float = 0.0) -> BegunRun | str:
    """Record the run an event starts, with its delivery, in one transaction.

    A BegunRun to drive (`.drive()`), or, for a delivery seen before, the id of the run
    its first copy started: one event, one run, however often it is delivered.
    """
    trigger, plan = triggered_plan(event)
    if trigger.action not in RUN_ACTIONS:
        raise UsageError(f"trigger `{trigger.name}`: `action: {trigger.action}` is not "
                         "started by a queue consumer", hint="use `apply` or `plan`")
    options = RunOptions(operation=RUN_ACTIONS[trigger.action])
    return begin_run(plan, runtime_for(plan), options, lock_timeout=lock_timeout,
                     delivery=(event.source, event.delivery_id))
