"""Consume an SQS queue: each message becomes trigger events, each event starts one run.

- Long polling (`WaitTimeSeconds`), up to ten messages a call.
- The SQS MessageId is the delivery id: a message delivered again (SQS delivers at least
  once) starts no second run (Store.claim_delivery, through `start`).
- A message is deleted only after `start` returned, i.e. after its run (and delivery)
  were committed to the store; a crash before that leaves it on the queue, to come back.
- S3's test event is deleted and ignored; a body the trigger cannot read is moved aside
  at once, and a message whose runs failed to start `max_receives` times (SQS's
  ApproximateReceiveCount) is moved aside: to the queue's dead-letter queue when its
  RedrivePolicy names one, else deleted. Either way one log line says why.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from iacorch.engine.aws_clients import describe_aws_error, is_aws_error
from iacorch.engine.triggered import TriggerEvent
from iacorch.errors import IacorchError
from iacorch.model.runbook import S3Source, SqsSource, Trigger

from . import s3_events
from .s3_events import MalformedMessage

StartRun = Callable[[TriggerEvent], str]   # an event -> the id of the run it started
_RETRY_AFTER_AWS_ERROR = 2.0               # seconds between polls while AWS fails


@dataclass(frozen=True)
class Route:
    """One trigger that reads a queue: the runbook it starts and how it reads a message."""

    runbook: str
    trigger: Trigger

    @property
    def source(self) -> SqsSource | S3Source:
        source = self.trigger.sqs or self.trigger.s3
        assert source is not None, "a queue route has an `sqs` or `s3` trigger"
        return source

    def events(self, message: dict[str, Any]) -> list[TriggerEvent]:
        """The events this trigger takes from `message` (none: not for it, or a test event)."""
        message_id = str(message["MessageId"])
        if self.trigger.sqs is not None:
            return [self._event(message_id, _message_data(message))]
        assert self.trigger.s3 is not None
        records = s3_events.s3_records(str(message.get("Body", "")))
        if records is None:
            return []
        found = [(index, data) for index, data in
                 ((i, s3_events.event_data(r)) for i, r in enumerate(records))
                 if s3_events.wanted(self.trigger.s3, data)]
        return [self._event(message_id if len(records) == 1 else f"{message_id}/{index}", data)
                for index, data in found]

    def _event(self, delivery_id: str, data: dict[str, Any]) -> TriggerEvent:
        return TriggerEvent(runbook=self.runbook, trigger=self.trigger.name,
                            delivery_id=delivery_id, data=data)


def _message_data(message: dict[str, Any]) -> dict[str, Any]:
    """`event` for a plain SQS trigger: the body as text, and as JSON when it is JSON."""
    body = str(message.get("Body", ""))
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        parsed = None
    attributes = {name: value.get("StringValue") for name, value in
                  message.get("MessageAttributes", {}).items()}
    return {"message_id": message["MessageId"], "body": body, "json": parsed,
            "attributes": attributes,
            "sent_at": message.get("Attributes", {}).get("SentTimestamp")}


class QueueConsumer:
    """The routes of one queue, fed by long polling, each message handed to `start`."""

    def __init__(self, sqs: Any, queue_url: str, routes: Sequence[Route], start: StartRun,
                 log: logging.Logger, *, wait_seconds: int = 20) -> None:
        self.sqs, self.queue_url, self.routes = sqs, queue_url, tuple(routes)
        self.start, self.log, self.wait_seconds = start, log, wait_seconds
        self.max_receives = min(route.source.max_receives for route in self.routes)
        self._aside_url: str | None = None
        self._aside_known = False

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set; failures are logged and polling goes on."""
        while not stop.is_set():
            try:
                self.poll()
            except Exception as exc:
                if is_aws_error(exc):
                    what, hint = describe_aws_error(exc)
                    self.log.error("queue %s: %s (%s)", self.queue_url, what, hint)
                else:   # a bug: said with its traceback, and the queue is still served
                    self.log.exception("queue %s: internal error", self.queue_url)
                stop.wait(_RETRY_AFTER_AWS_ERROR)

    def poll(self, wait_seconds: int | None = None) -> int:
        """One long poll; handles what arrived and returns how many messages that was."""
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10,
            WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
            MessageAttributeNames=["All"])
        messages = answer.get("Messages", [])
        for message in messages:
            self.handle(message)
        return len(messages)

    def handle(self, message: dict[str, Any]) -> None:
        """Start the runs a message asks for; delete it once they are committed."""
        message_id = message["MessageId"]
        try:
            events = [event for route in self.routes for event in route.events(message)]
        except MalformedMessage as exc:
            self._move_aside(message, f"malformed body: {exc}")
            return
        failed = []
        for event in events:
            try:
                run_id = self.start(event)
            except IacorchError as exc:
                failed.append(f"{event.source}: {exc.render()}")
                continue
            except Exception as exc:   # a bug: said, counted, and the queue goes on
                self.log.exception("message %s: internal error starting %s", message_id,
                                   event.source)
                failed.append(f"{event.source}: internal error: {exc!r}")
                continue
            self.log.info("message %s: %s -> run %s", message_id, event.source, run_id)
        if not failed:
            if not events:
                self.log.info("message %s: no trigger wants it (S3 test event or filtered "
                              "out); deleted", message_id)
            self._delete(message)
            return
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        reasons = "; ".join(failed)
        if receives >= self.max_receives:
            self._move_aside(message, f"no run started after {receives} deliveries: {reasons}")
        else:
            self.log.error("message %s: delivery %d of %d failed, it will come back: %s",
                           message_id, receives, self.max_receives, reasons)

    def _delete(self, message: dict[str, Any]) -> None:
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _move_aside(self, message: dict[str, Any], why: str) -> None:
        aside = self._dead_letter_queue()
        if aside is not None:
            self.sqs.send_message(QueueUrl=aside, MessageBody=message.get("Body", ""))
        self._delete(message)
        self.log.error("message %s: %s; %s", message["MessageId"], why,
                       f"moved to {aside}" if aside else
                       "dropped (give the queue a RedrivePolicy to keep such messages)")

    def _dead_letter_queue(self) -> str | None:
        """The URL of the queue's dead-letter queue (its RedrivePolicy), looked up once."""
        if not self._aside_known:
            attributes = self.sqs.get_queue_attributes(
                QueueUrl=self.queue_url, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
            policy = json.loads(attributes.get("RedrivePolicy") or "{}")
            target = str(policy.get("deadLetterTargetArn", ""))
            if target:
                _, _, _, _, account, name = target.split(":", 5)
                self._aside_url = self.sqs.get_queue_url(
                    QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
            self._aside_known = True
        return self._aside_url


def queue_url(sqs: Any, queue: str) -> str:
    """A queue's URL from the URL or name a trigger gives."""
    if queue.startswith(("https://", "http://")):
        return queue
    return str(sqs.get_queue_url(QueueName=queue)["QueueUrl"])
