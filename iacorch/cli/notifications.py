"""Sending a command's notifications: the one place the CLI hands events to channels.

A scheduled job's child process gets `IACORCH_NOTIFY_ONLY` (the schedule's `notify:`
list), which narrows the runbook's channels to the ones that schedule names.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

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


def run_end_sink(plan: Plan, runtime: Runtime) -> None:
    """Let the runbook's `notify:` channels hear how the command's run ends."""
    if plan.runbook is None or not plan.runbook.notify:
        return   # without importing what notifications need (start-up time)
    from iacorch.engine.notify import RunEndNotifier

    RunEndNotifier.attach(plan, runtime, only=only_channels(),
                          log=lambda line: click.echo(f"  {line}", err=True))
