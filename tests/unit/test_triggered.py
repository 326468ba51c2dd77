"""Trigger events become var values; their fields are data, never template code."""

from __future__ import annotations

import pytest

from iacorch.engine.triggered import TriggerEvent, event_vars
from iacorch.errors import UsageError
from iacorch.model.runbook import Trigger


def hook(**vars: object) -> Trigger:
    return Trigger.model_validate({"name": "on-push", "vars": vars,
                                   "webhook": {"secret": {"env": "HOOK_SECRET"}}})


def event(**data: object) -> TriggerEvent:
    return TriggerEvent(runbook="plans/web.yaml", trigger="on-push", delivery_id="d-1",
                        data=data)


def test_vars_take_event_fields() -> None:
    got = event_vars(hook(ref="{{ event.ref }}", sha="{{ event.head.sha[:7] }}", env="prod"),
                     event(ref="refs/heads/main", head={"sha": "0123456789"}))
    assert got == {"ref": "refs/heads/main", "sha": "0123456", "env": "prod"}


def test_template_code_inside_an_event_is_text() -> None:
    payload = "{{ ''.__class__.__mro__ }}{% for x in range(9) %}x{% endfor %}"
    got = event_vars(hook(ref="{{ event.ref }}"), event(ref=payload))
    assert got == {"ref": payload}


def test_a_missing_event_field_names_the_trigger() -> None:
    with pytest.raises(UsageError, match="trigger `on-push`"):
        event_vars(hook(ref="{{ event.nope.deeper }}"), event(ref="x"))


def test_deliveries_are_counted_per_runbook_and_trigger() -> None:
    assert event().source == "plans/web.yaml#on-push"
