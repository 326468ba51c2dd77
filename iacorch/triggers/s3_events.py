"""S3 event notifications (as delivered to SQS) turned into the data of trigger events.

The message body is S3's JSON (`Records[].s3.bucket.name`, `...object.key`, ...), or
the same wrapped in an SNS envelope when the bucket notifies a topic that feeds the queue.
Object keys arrive URL-encoded with `+` for a space: they are decoded with unquote_plus.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_plus

from iacorch.model.runbook import S3Source

# `events:` of an S3 trigger -> the prefix of S3's eventName
_EVENT_PREFIX = {"created": "ObjectCreated:", "removed": "ObjectRemoved:"}


class MalformedMessage(ValueError):
    """A message body that is not what the queue's trigger expects: retrying cannot help."""


def s3_records(body: str) -> list[dict[str, Any]] | None:
    """The S3 records a message carries; None for S3's `s3:TestEvent` (sent when a bucket's
    notification is configured). MalformedMessage for anything else that is not S3's JSON."""
    try:
        notice = json.loads(body)
    except ValueError:
        raise MalformedMessage("the body is not JSON") from None
    if isinstance(notice, dict) and notice.get("Type") == "Notification" \
            and isinstance(notice.get("Message"), str):   # S3 -> SNS -> SQS
        return s3_records(notice["Message"])
    if not isinstance(notice, dict):
        raise MalformedMessage("the body is not a JSON object")
    if notice.get("Event") == "s3:TestEvent":
        return None
    records = notice.get("Records")
    if not isinstance(records, list) or not records:
        raise MalformedMessage("the body has no `Records` list (not an S3 event notification)")
    for record in records:
        if not _is_s3_record(record):
            raise MalformedMessage("a record has no `s3.bucket.name` and `s3.object.key`")
    return records


def event_data(record: dict[str, Any]) -> dict[str, Any]:
    """What a trigger's templates see as `event` for one S3 record."""
    s3 = record["s3"]
    found = s3["object"]
    return {
        "bucket": s3["bucket"]["name"],
        "key": unquote_plus(found["key"]),
        "size": found.get("size"),
        "etag": found.get("eTag"),
        "version_id": found.get("versionId"),
        "event": record.get("eventName", ""),
        "time": record.get("eventTime"),
        "region": record.get("awsRegion"),
    }


def wanted(source: S3Source, data: dict[str, Any]) -> bool:
    """Whether the trigger asks for this object event (bucket, key prefix, kind of event)."""
    return (data["bucket"] == source.bucket and data["key"].startswith(source.prefix)
            and any(data["event"].startswith(_EVENT_PREFIX[kind]) for kind in source.events))


def _is_s3_record(record: Any) -> bool:
    if not isinstance(record, dict) or not isinstance(record.get("s3"), dict):
        return False
    s3 = record["s3"]
    bucket, found = s3.get("bucket"), s3.get("object")
    return isinstance(bucket, dict) and isinstance(bucket.get("name"), str) \
        and isinstance(found, dict) and isinstance(found.get("key"), str)
