"""SQS and S3-notification triggers against moto's mock_aws: one message, one run; the
message deleted once its run is committed; test events ignored; bad bodies and poison
messages moved aside with a log line; S3 keys decoded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from iacorch.engine.runtime import Runtime
from iacorch.engine.triggered import TriggerEvent, start_from_event
from iacorch.errors import UsageError
from iacorch.model.runbook import Trigger
from iacorch.model.status import RunStatus
from iacorch.store import open_store
from iacorch.triggers.s3_events import MalformedMessage, s3_records
from iacorch.triggers.sqs import QueueConsumer, Route

from .test_executor_seam import RecordingExecutor

RUNBOOK = """\
version: 1
name: queued
vars:
  version: {required: true}
stages:
  ship: {kind: deploy, shell: {run: "echo {{ vars.version }}"}}
triggers:
  - name: releases
    sqs: {queue: releases, max_receives: 3}
    vars: {version: "{{ event.json.version }}"}
  - name: uploads
    s3: {bucket: artifacts, queue: uploads, prefix: releases/}
    vars: {version: "{{ event.key }}"}
"""


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    with mock_aws():
        yield boto3.client("sqs")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IACORCH_PROJECT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "queued.yaml").write_text(RUNBOOK)
    store = open_store(str(tmp_path / "state.db"))
    yield tmp_path, store
    store.close()


def real_start(tmp_path: Path, store) -> Callable[[TriggerEvent], str]:
    """The engine's start of a triggered run, driving it to its end before returning."""
    def start(event: TriggerEvent) -> str:
        runtime = Runtime(store=store, state_dir=tmp_path / ".iacorch",
                          executor=RecordingExecutor())
        started = start_from_event(event, runtime, root=tmp_path)
        assert started.duplicate or started.outcome.status is RunStatus.SUCCEEDED
        return started.run_id
    return start


def trigger(name: str) -> Trigger:
    from iacorch.runbook.compiler import validate_model
    from iacorch.runbook.source import load_document

    runbook = validate_model(load_document("queued.yaml"))
    return next(t for t in runbook.triggers if t.name == name)


def consumer(sqs, name: str, start, *, dead_letter: bool = False) -> tuple[QueueConsumer, str]:
    attributes = {}
    if dead_letter:
        aside = sqs.create_queue(QueueName=f"{name}-aside")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=aside, AttributeNames=["QueueArn"])
        attributes["RedrivePolicy"] = json.dumps({
            "deadLetterTargetArn": arn["Attributes"]["QueueArn"], "maxReceiveCount": "100"})
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    log = logging.getLogger("test.listen")
    return QueueConsumer(sqs, url, [Route("queued.yaml", trigger(
        "releases" if name == "releases" else "uploads"))], start, log, wait_seconds=0), url


def receive(sqs, url: str, *, again: bool = True) -> dict:
    """One delivery of the queue's message; `again`: it stays, to be delivered again."""
    return sqs.receive_message(
        QueueUrl=url, WaitTimeSeconds=0, VisibilityTimeout=0 if again else 30,
        MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"][0]


def left(sqs, url: str) -> int:
    found = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])
    return sum(int(v) for v in found["Attributes"].values())


def test_one_message_delivered_ten_times_starts_one_run(aws, project) -> None:
    tmp_path, store = project
    queue, url = consumer(aws, "releases", real_start(tmp_path, store))
    aws.send_message(QueueUrl=url, MessageBody=json.dumps({"version": "1.4.2"}))
    copies = [receive(aws, url) for _ in range(10)]   # before any is deleted
    assert len({copy["MessageId"] for copy in copies}) == 1
    assert len({copy["ReceiptHandle"] for copy in copies}) == 10
    for copy in copies:
        queue.handle(copy)
    runs = store.list_runs()
    assert len(runs) == 1 and runs[0].vars == {"version": "1.4.2"}
    assert runs[0].status is RunStatus.SUCCEEDED
    assert left(aws, url) == 0


def test_the_message_stays_until_its_run_is_committed(aws, project) -> None:
    tmp_path, store = project
    seen_on_queue: list[int] = []
    start = real_start(tmp_path, store)
    queue, url = consumer(aws, "releases", lambda event: (
        seen_on_queue.append(left(aws, url)), start(event))[1])
    aws.send_message(QueueUrl=url, MessageBody=json.dumps({"version": "2"}))
    assert queue.poll(wait_seconds=0) == 1
    assert seen_on_queue == [1] and left(aws, url) == 0 and len(store.list_runs()) == 1


def test_a_failing_start_leaves_the_message_then_moves_it_aside(aws, project, caplog) -> None:
    def refuse(event: TriggerEvent) -> str:
        raise UsageError("secret `db` comes from $DB, which is not set")
    queue, url = consumer(aws, "releases", refuse, dead_letter=True)
    aws.send_message(QueueUrl=url, MessageBody='{"version": "3"}')
    with caplog.at_level(logging.INFO, logger="test.listen"):
        for _ in range(3):   # max_receives: 3
            queue.handle(receive(aws, url))
    aside = aws.get_queue_url(QueueName="releases-aside")["QueueUrl"]
    assert left(aws, url) == 0 and left(aws, aside) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert sum("delivery" in line and "failed, it will come back" in line
               for line in lines) == 2
    assert "no run started after 3 deliveries" in lines[-1] and aside in lines[-1]
    assert "secret `db` comes from $DB" in lines[-1]


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"Records": []}',
                                  '{"Records": [{"s3": {"bucket": {}}}]}'])
def test_malformed_s3_bodies_are_moved_aside_at_once(aws, project, caplog, body) -> None:
    started: list[TriggerEvent] = []
    queue, url = consumer(aws, "uploads", lambda e: started.append(e) or "r", dead_letter=True)
    aws.send_message(QueueUrl=url, MessageBody=body)
    with caplog.at_level(logging.INFO, logger="test.listen"):
        queue.poll(wait_seconds=0)
    aside = aws.get_queue_url(QueueName="uploads-aside")["QueueUrl"]
    assert started == [] and left(aws, url) == 0
    moved = aws.receive_message(QueueUrl=aside)["Messages"][0]
    assert moved["Body"] == body
    assert "malformed body" in caplog.records[-1].getMessage()


def test_without_a_dead_letter_queue_a_bad_message_is_dropped_and_said(aws, project,
                                                                       caplog) -> None:
    queue, url = consumer(aws, "uploads", lambda e: "r")
    aws.send_message(QueueUrl=url, MessageBody="garbage")
    with caplog.at_level(logging.INFO, logger="test.listen"):
        queue.poll(wait_seconds=0)
    assert left(aws, url) == 0
    assert "dropped (give the queue a RedrivePolicy" in caplog.records[-1].getMessage()


def wire_bucket(url: str) -> None:
    sqs, s3 = boto3.client("sqs"), boto3.client("s3")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    s3.create_bucket(Bucket="artifacts")
    s3.put_bucket_notification_configuration(Bucket="artifacts", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn["Attributes"]["QueueArn"],
                                 "Events": ["s3:ObjectCreated:*"]}]})


def test_s3_test_event_is_ignored_and_keys_are_decoded(aws, project) -> None:
    tmp_path, store = project
    queue, url = consumer(aws, "uploads", real_start(tmp_path, store))
    wire_bucket(url)   # S3 sends s3:TestEvent to the queue
    assert queue.poll(wait_seconds=0) == 1 and store.list_runs() == [] and left(aws, url) == 0
    s3 = boto3.client("s3")
    s3.put_object(Bucket="artifacts", Key="releases/my app+v1 100%.tgz", Body=b"x")
    s3.put_object(Bucket="artifacts", Key="drafts/other.tgz", Body=b"x")    # not the prefix
    while queue.poll(wait_seconds=0):
        pass
    assert [run.vars for run in store.list_runs()] == [{"version": "releases/my app+v1 100%.tgz"}]
    assert left(aws, url) == 0


def test_s3_records_parsing() -> None:
    assert s3_records(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})) is None
    wrapped = json.dumps({"Type": "Notification", "Message": json.dumps({"Records": [
        {"eventName": "ObjectCreated:Put",
         "s3": {"bucket": {"name": "b"}, "object": {"key": "a+b%2Bc"}}}]})})
    records = s3_records(wrapped)
    assert records is not None and records[0]["s3"]["object"]["key"] == "a+b%2Bc"
    from iacorch.triggers.s3_events import event_data

    assert event_data(records[0])["key"] == "a b+c"
    with pytest.raises(MalformedMessage, match="not JSON"):
        s3_records("{")


def test_a_plain_sqs_event_offers_body_json_and_attributes(aws, project) -> None:
    started: list[TriggerEvent] = []
    queue, url = consumer(aws, "releases", lambda e: started.append(e) or "run-1")
    aws.send_message(QueueUrl=url, MessageBody="plain text",
                     MessageAttributes={"team": {"DataType": "String", "StringValue": "web"}})
    queue.poll(wait_seconds=0)
    (event,) = started
    assert event.data["body"] == "plain text" and event.data["json"] is None
    assert event.data["attributes"] == {"team": "web"}
    assert event.delivery_id == event.data["message_id"] and event.trigger == "releases"




def record(key: str, event: str = "ObjectCreated:Put", bucket: str = "artifacts") -> dict:
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}


@pytest.mark.parametrize("wanted_events, rec, expected", [
    (["created"], record("releases/a.tgz"), True),
    (["created"], record("releases/a.tgz", "ObjectRemoved:Delete"), False),
    (["removed"], record("releases/a.tgz", "ObjectRemoved:Delete"), True),
    (["created", "removed"], record("releases/a.tgz", "ObjectRemoved:Delete"), True),
    (["created"], record("drafts/a.tgz"), False),
    (["created"], record("releases/a.tgz", bucket="other"), False),
])
def test_which_s3_records_a_trigger_wants(wanted_events, rec, expected) -> None:
    from iacorch.model.runbook import S3Source
    from iacorch.triggers.s3_events import event_data, wanted

    source = S3Source(bucket="artifacts", queue="q", prefix="releases/", events=wanted_events)
    assert wanted(source, event_data(rec)) is expected


def test_each_record_of_a_multi_record_message_is_its_own_delivery(project) -> None:
    body = json.dumps({"Records": [record("releases/a.tgz"), record("drafts/b.tgz"),
                                   record("releases/c%2B1.tgz")]})
    events = Route("queued.yaml", trigger("uploads")).events(
        {"MessageId": "m-1", "Body": body, "ReceiptHandle": "r"})
    assert [(e.delivery_id, e.data["key"]) for e in events] == [
        ("m-1/0", "releases/a.tgz"), ("m-1/2", "releases/c+1.tgz")]


def test_the_consumer_goes_on_after_aws_fails(aws, project, caplog) -> None:
    import threading

    started: list[TriggerEvent] = []
    queue, url = consumer(aws, "releases", lambda e: started.append(e) or "r")
    aws.delete_queue(QueueUrl=url)
    stop = threading.Event()
    waits: list[float] = []
    stop.wait = lambda seconds: waits.append(seconds) or len(waits) >= 2   # type: ignore
    stop.is_set = lambda: len(waits) >= 2                                  # type: ignore
    with caplog.at_level(logging.INFO, logger="test.listen"):
        queue.run(stop)
    assert len(waits) == 2 and started == []
    assert all("not found" in r.getMessage() for r in caplog.records[-2:])
