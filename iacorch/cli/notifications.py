"""Sending a command's notifications: the one place the CLI hands events to channels.

A scheduled job's child process gets `IACORCH_NOTIFY_ONLY` (the schedule's `notify:`
list), which narrows the runbook's channels to the ones that schedule names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from iacorch.engine.notify import Notification
    from iacorch.engine.runtime import Runtime
    from iacorch.model.plan import Plan


def only_channels() -> tuple[str, ...]:
    """The channel names a scheduler asked for, or () for every channel."""
    from iacorch.schedule.jobs import NOTIFY_ONLY_ENV

    return tuple(n for n in os.environ.get(NOTIFY_ONLY_ENV, "").split(",") if n.strip())


def send(plan: Plan, runtime: Runtime, notifications: Sequence[Notification]) -> None:
    """Deliver; failures are printed and audited, never raised."""
    if not notifications or plan.runbook is None or not plan.runbook.notify:
        return
    from iacorch.engine.notify import notifier_for

    def log(line: str) -> None:
        click.echo(f"  {line}", err=True)

    notifier = notifier_for(plan, runtime, log=log)
    for notification in notifications:
        try:
            notifier.send(notification, only_channels())
        except Exception as exc:  # noqa: BLE001 - a notification never fails a run
            log(f"notify: {notification.event} not sent: {exc}")


def notify_run_end(plan: Plan, runtime: Runtime, outcome: Any,
                   operation: str | None = None) -> None:
    """Tell the channels how a run ended (succeeded, failed, waiting for approval...)."""
    if runtime.interrupt_signal is not None or plan.runbook is None \
            or not plan.runbook.notify:
        return
    from iacorch.engine.notify_events import run_notifications

    if operation is None:
        operation = runtime.store.get_run(outcome.run_id).operation
    send(plan, runtime, run_notifications(
        runbook=plan.name, workspace=plan.workspace, operation=operation,
        run_id=outcome.run_id, status=outcome.status, errors=outcome.errors,
        statuses=outcome.statuses, elapsed=outcome.elapsed, deadline=outcome.deadline,
        deadline_breached=outcome.deadline_breached_now, waiting_gates=outcome.waiting_gates))
