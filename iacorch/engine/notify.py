"""Notifications: the runbook's `notify:` channels told about run ends, drift and failed
scheduled jobs.

A `webhook` channel gets a JSON POST whose `text` field makes it a valid Slack (or
Mattermost, Teams workflow) incoming-webhook message; a `command` channel gets the same
JSON on stdin. Every payload is masked. A delivery is retried with backoff on network
errors, 5xx, 408 and 429; what still fails is logged and audited, and never changes a
run's outcome or exit code.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from iacorch import __version__
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.process import ProcessRunner
from iacorch.runbook.templating import TemplateProblem, Templates

if TYPE_CHECKING:
    from iacorch.model.plan import Plan
    from iacorch.store.base import Store

    from .runtime import Runtime

_RETRY_STATUS = frozenset({408, 429})
_OUTPUT_TAIL = 5


@dataclass(frozen=True)
class Notification:
    """One event for the channels: what happened, in words and in fields."""

    event: str
    runbook: str
    workspace: str
    text: str
    run_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def payload(self) -> dict[str, Any]:
        """The JSON document sent: Slack's `text` plus every field for machines."""
        return {"event": self.event, "text": self.text, "runbook": self.runbook,
                "workspace": self.workspace, "run": self.run_id,
                "time": datetime.fromtimestamp(self.time, UTC).isoformat(timespec="seconds"),
                "host": socket.gethostname(), "source": f"iacorch {__version__}",
                **self.data}


@dataclass(frozen=True)
class Delivery:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None
    skipped: bool = False


def channels_for(channels: Mapping[str, Any], event: str,
                 only: Sequence[str] = ()) -> dict[str, Any]:
    """The channels that want `event`; `only` (a schedule's `notify:` list) narrows them."""
    return {name: channel for name, channel in channels.items()
            if event in channel.on and (not only or name in only)}


class Notifier:
    """Sends notifications to a runbook's channels. Never raises on a delivery failure."""

    def __init__(self, channels: Mapping[str, Any], *, masker: Masker | None = None,
                 context: Mapping[str, Any] | None = None, process: ProcessRunner | None = None,
                 store: Store | None = None, actor: str | None = None,
                 log: Callable[[str], None] = lambda line: None, attempts: int = 3,
                 backoff: float = 1.0, timeout: float = 10.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.channels = channels
        self.masker = masker or Masker()
        self.context = dict(context or {})
        self.process, self.store, self.actor, self.log = process, store, actor, log
        self.attempts, self.backoff, self.timeout, self.sleep = attempts, backoff, timeout, sleep

    def send(self, notification: Notification, only: Sequence[str] = ()) -> list[Delivery]:
        """Deliver to every channel that wants this event, in parallel; report each."""
        chosen = channels_for(self.channels, notification.event, only)
        if not chosen:
            return []
        payload = self.masker.mask_value(notification.payload())
        body = json.dumps(payload, sort_keys=True, default=str).encode()
        with ThreadPoolExecutor(max_workers=min(8, len(chosen)),
                                thread_name_prefix="notify") as pool:
            futures = {name: pool.submit(self._deliver, name, channel, notification.event, body)
                       for name, channel in chosen.items()}
            deliveries = [future.result() for future in futures.values()]
        for delivery in deliveries:
            self._record(notification, delivery)
        return deliveries

    def _deliver(self, name: str, channel: Any, event: str, body: bytes) -> Delivery:
        if channel.webhook is not None:
            try:
                url = str(Templates().render(channel.webhook, self.context)).strip()
            except TemplateProblem as exc:
                return Delivery(name, False, 0, self.masker.mask(
                    f"webhook URL template: {exc.message}"))
            if not url:
                return Delivery(name, False, 0, "webhook URL is empty", skipped=True)
            send: Callable[[], str | None] = partial(self._post, url, body)
        else:
            send = partial(self._command, channel.command, event, body)
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            error = send()
            if error is None:
                return Delivery(name, True, attempt)
            if error.startswith("final:") or attempt == self.attempts:
                break
            self.sleep(self.backoff * 2 ** (attempt - 1))
        return Delivery(name, False, attempt, self.masker.mask(error.removeprefix("final:")
                                                               if error else "failed"))

    def _post(self, url: str, body: bytes) -> str | None:
        """None on success; an error text, prefixed `final:` when a retry cannot help."""
        import urllib.error  # here: most runs send no webhook, and urllib takes time to load
        import urllib.request

        if urlsplit(url).scheme not in ("http", "https"):
            return "final:webhook URL must start with http:// or https://"
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": f"iacorch/{__version__}"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
                reply.read(4096)
            return None
        except urllib.error.HTTPError as exc:
            retry = exc.code >= 500 or exc.code in _RETRY_STATUS
            return f"{'' if retry else 'final:'}HTTP {exc.code} from {_where(url)}"
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            return f"{_where(url)}: {reason}"

    def _command(self, command: str | Sequence[str], event: str, body: bytes) -> str | None:
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        runner = self.process or ProcessRunner(orphan_guard=False)
        result = runner.run(argv, stdin=body, timeout=self.timeout, masker=self.masker,
                            env={"IACORCH_EVENT": event})
        if result.ok:
            return None
        if result.start_error:
            return f"final:{result.start_error}"
        tail = " | ".join(result.tail[-_OUTPUT_TAIL:])
        why = "timed out" if result.timed_out else f"exited with code {result.exit_code}"
        return f"{argv[0]} {why}" + (f": {tail}" if tail else "")

    def _record(self, notification: Notification, delivery: Delivery) -> None:
        if delivery.ok:
            self.log(f"notified {delivery.channel} of {notification.event}")
        elif delivery.skipped:
            self.log(f"notify {delivery.channel}: skipped ({delivery.error})")
        else:
            self.log(f"notify {delivery.channel}: delivery of {notification.event} FAILED after "
                     f"{delivery.attempts} attempt(s): {delivery.error}")
        if self.store is None:
            return
        try:
            self.store.append_audit(
                "notification_sent" if delivery.ok else "notification_failed",
                run_id=notification.run_id, actor=self.actor,
                data={"channel": delivery.channel, "event": notification.event,
                      "attempts": delivery.attempts,
                      **({"error": delivery.error} if delivery.error else {})})
        except Exception as exc:  # noqa: BLE001 - a notification never fails the run
            self.log(f"notify: could not audit the delivery: {exc}")


def _where(url: str) -> str:
    """scheme://host of a URL: webhook paths often hold a token, so never the whole URL."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}" + (f":{parts.port}" if parts.port
                                                         else "")


class RunEndNotifier:
    """An event sink: when a run finishes, the runbook's channels hear how it ended.

    Any front door (the CLI, the server, a worker's coordinator) adds one to its Runtime;
    a run interrupted by a signal tells nothing. Delivery failures are logged, never raised.
    """

    def __init__(self, plan: Plan, runtime: Runtime, *, log: Callable[[str], None],
                 only: Sequence[str] = ()) -> None:
        self.plan, self.runtime, self.log, self.only = plan, runtime, log, tuple(only)

    @classmethod
    def attach(cls, plan: Plan, runtime: Runtime, *, log: Callable[[str], None] | None = None,
               only: Sequence[str] = ()) -> None:
        """Add one to `runtime`'s sinks when the runbook has `notify:` channels.

        Without `log`, delivery problems go to the `iacorch.notify` logger (a server's).
        """
        if plan.runbook is None or not plan.runbook.notify:
            return
        if log is None:
            import logging

            log = logging.getLogger("iacorch.notify").warning
        runtime.sinks.append(cls(plan, runtime, log=log, only=only))

    def handle(self, event: Event) -> None:
        if event.kind is not EventKind.RUN_FINISHED or self.runtime.interrupt_signal is not None:
            return
        from iacorch.model.status import RunStatus, StageStatus

        from .notify_events import run_notifications

        data = event.data
        notifications = run_notifications(
            runbook=self.plan.name, workspace=self.plan.workspace, operation=data["operation"],
            run_id=event.run_id, status=RunStatus(data["status"]), errors=data["errors"],
            statuses={sid: StageStatus(s) for sid, s in data["stages"].items()},
            elapsed=data["elapsed"], deadline=data["deadline"],
            deadline_breached=data["deadline_breached"], waiting_gates=data["waiting_gates"])
        if not notifications:
            return
        notifier = notifier_for(self.plan, self.runtime, log=self.log)
        for notification in notifications:
            try:
                notifier.send(notification, self.only)
            except Exception as exc:  # noqa: BLE001 - a notification never fails a run
                self.log(f"notify: {notification.event} not sent: {exc}")


def notifier_for(plan: Plan, runtime: Runtime, *, log: Callable[[str], None],
                 **options: Any) -> Notifier:
    """The Notifier of a compiled runbook: its channels, its secrets masked, its store."""
    from iacorch.errors import UsageError

    from .secrets import resolve_secrets

    channels = plan.runbook.notify if plan.runbook is not None else {}
    try:
        secrets = resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations) \
            if channels else {}
    except UsageError:
        secrets = {}    # the run itself already said which secret is missing
    context = {"vars": dict(plan.vars), "secrets": secrets, "env": dict(os.environ),
               "runbook": {"name": plan.name, "workspace": plan.workspace,
                           "dir": str(plan.root)}}
    return Notifier(channels, masker=Masker(secrets.values()), context=context,
                    process=runtime.process, store=runtime.store, actor=runtime.identity,
                    log=log, **options)
