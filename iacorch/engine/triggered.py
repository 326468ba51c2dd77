"""An event a runbook's trigger received, and the var values it gives the run it starts.

Every source (a webhook, an SQS message, an S3 notification) turns what arrived into a
TriggerEvent; what starts the run is the same for all of them. Event fields are data:
they fill the trigger's `vars` templates, but a `{{ ... }}` inside an event field is
text, never rendered (templates render once, in the sandbox).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.runbook import Trigger
from iacorch.runbook.templating import TemplateProblem, Templates


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
