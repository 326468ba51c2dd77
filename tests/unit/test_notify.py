"""Notifications without a network: channel choice, retries with backoff, masking, events."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest

from iacorch.engine.drift import DriftReport
from iacorch.engine.drift_rules import DriftStatus, StageDrift
from iacorch.engine.notify import Notification, Notifier, channels_for
from iacorch.engine.notify_events import (
    drift_notifications,
    run_notifications,
    schedule_failed,
)
from iacorch.model.masking import Masker
from iacorch.model.status import RunStatus, StageStatus
from iacorch.store.memory import MemoryStore

SECRET = "hook-tok-5f2e9a"


def channel(**fields: Any) -> SimpleNamespace:
    return SimpleNamespace(**{"webhook": None, "command": None,
                              "on": ["failed", "rollback_failed", "drift"], **fields})


class Replies:
    """Stands in for urlopen: each call takes the next reply (an exception or a body)."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.requests: list[urllib.request.Request] = []

    def __call__(self, request: urllib.request.Request, timeout: float) -> Any:
        self.requests.append(request)
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return io.BytesIO(reply)


@pytest.fixture
def replies(monkeypatch: pytest.MonkeyPatch):
    def install(*items: Any) -> Replies:
        fake = Replies(*items)
        monkeypatch.setattr(urllib.request, "urlopen", fake)
        return fake
    return install


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("http://x", code, "no", {}, None)  # type: ignore[arg-type]


def notifier(channels: dict[str, Any], **options: Any) -> tuple[Notifier, list[float],
                                                                list[str], MemoryStore]:
    sleeps: list[float] = []
    lines: list[str] = []
    store = MemoryStore()
    found = Notifier(channels, masker=Masker([SECRET]), context={
        "env": {"HOOK": f"http://127.0.0.1:9/hook/{SECRET}"}, "vars": {}, "secrets": {}},
        store=store, actor="tester", log=lines.append, sleep=sleeps.append, **options)
    return found, sleeps, lines, store


def note(event: str = "drift", text: str = "drift!") -> Notification:
    return Notification(event, "site", "dev", text, "run-1", {"detail": f"token {SECRET}"})


def test_channels_are_chosen_by_event_and_narrowed_by_a_schedule():
    channels = {"ops": channel(), "chat": channel(on=["succeeded", "drift"])}
    assert list(channels_for(channels, "drift")) == ["ops", "chat"]
    assert list(channels_for(channels, "succeeded")) == ["chat"]
    assert list(channels_for(channels, "drift", only=["chat"])) == ["chat"]
    assert channels_for(channels, "schedule_failed") == {}


def test_webhook_retries_with_backoff_then_delivers_a_masked_payload(replies):
    fake = replies(urllib.error.URLError("refused"), http_error(503), b"ok")
    sender, sleeps, lines, store = notifier({"ops": channel(webhook="{{ env.HOOK }}")})
    [delivery] = sender.send(note())
    assert delivery.ok and delivery.attempts == 3 and sleeps == [1.0, 2.0]
    body = fake.requests[-1].data
    assert isinstance(body, bytes) and SECRET.encode() not in body
    payload = json.loads(body)
    assert payload["event"] == "drift" and payload["text"] == "drift!"
    assert payload["detail"] == "token ***" and payload["run"] == "run-1"
    assert fake.requests[-1].get_header("Content-type") == "application/json"
    assert lines == ["notified ops of drift"]
    assert [e.kind for e in store.audit_entries()] == ["notification_sent"]


def test_a_failing_webhook_is_logged_and_audited_never_raised(replies):
    replies(http_error(500), http_error(502), http_error(500))
    sender, sleeps, lines, store = notifier({"ops": channel(webhook="{{ env.HOOK }}")})
    [delivery] = sender.send(note())
    assert not delivery.ok and delivery.attempts == 3 and sleeps == [1.0, 2.0]
    assert "FAILED after 3 attempt(s): HTTP 500 from http://127.0.0.1:9" in lines[0]
    assert SECRET not in lines[0] and "/hook/" not in lines[0]    # a URL path may be a token
    [entry] = store.audit_entries()
    assert entry.kind == "notification_failed" and entry.data["channel"] == "ops"


def test_a_client_error_is_not_retried(replies):
    fake = replies(http_error(404))
    sender, sleeps, _, _ = notifier({"ops": channel(webhook="http://127.0.0.1:9/x")})
    [delivery] = sender.send(note())
    assert not delivery.ok and delivery.attempts == 1 and sleeps == [] and len(fake.requests) == 1


@pytest.mark.parametrize(("webhook", "error", "skipped"), [
    ("{{ env.MISSING }}", "webhook URL template", False),
    ("{{ env.MISSING | default('') }}", "webhook URL is empty", True),
    ("ftp://example.com/x", "must start with http", False),
])
def test_unusable_webhook_urls(replies, webhook, error, skipped):
    replies()
    sender, sleeps, lines, _ = notifier({"ops": channel(webhook=webhook)})
    [delivery] = sender.send(note())
    assert not delivery.ok and delivery.skipped is skipped and error in (delivery.error or "")
    assert sleeps == []


def test_nothing_is_sent_for_an_event_no_channel_wants(replies):
    fake = replies()
    sender, _, lines, store = notifier({"ops": channel(webhook="http://127.0.0.1:9/")})
    assert sender.send(note("succeeded")) == [] and fake.requests == [] and lines == []
    assert store.audit_entries() == []


@pytest.mark.parametrize(("status", "event"), [
    (RunStatus.SUCCEEDED, "succeeded"),
    (RunStatus.FAILED, "failed"),
    (RunStatus.ROLLED_BACK, "failed"),
    (RunStatus.ROLLBACK_FAILED, "rollback_failed"),
    (RunStatus.WAITING_APPROVAL, "approval_requested"),
    (RunStatus.INTERRUPTED, None),
])
def test_run_end_events(status, event):
    found = run_notifications(runbook="site", workspace="dev", operation="apply",
                              run_id="r1", status=status, errors={"net": "boom"},
                              statuses={"net": StageStatus.FAILED}, elapsed=3.0,
                              waiting_gates=("go-live",))
    assert [n.event for n in found] == ([event] if event else [])
    if event == "failed":
        assert "net: boom" in found[0].text and found[0].data["failed_stages"] == {"net": "boom"}
    if event == "approval_requested":
        assert "iacorch approve r1 go-live --resume" in found[0].text


@pytest.mark.parametrize(("breached_now", "events"), [
    (True, ["deadline_breached", "succeeded"]),
    (False, ["succeeded"]),     # over, but an earlier process of the run already said so
])
def test_a_breached_deadline_is_its_own_event_once(breached_now, events):
    found = run_notifications(runbook="site", workspace="dev", operation="apply",
                              run_id="r1", status=RunStatus.SUCCEEDED, errors={},
                              statuses={}, elapsed=90.0, deadline=60.0,
                              deadline_breached=breached_now)
    assert [n.event for n in found] == events


def report(*stages: StageDrift) -> DriftReport:
    return DriftReport("d1", "site", "dev", stages, 1.0, 2.0)


def test_drift_notifies_only_new_drift_and_names_what_drifted():
    finding = {"address": "terraform_data.node[2]", "action": "delete", "source": "config"}
    new = StageDrift("net", DriftStatus.DRIFTED, (finding,), fingerprint="f", new=True)
    old = StageDrift("web", DriftStatus.DRIFTED, ({"host": "h", "task": "t"},),
                     fingerprint="g", new=False)
    [found] = drift_notifications(report(new, old))
    assert found.event == "drift" and found.data["new"] == ["net"]
    assert found.data["drifted"] == ["net", "web"]
    assert "*net*: terraform_data.node[2] (delete)" in found.text and "web" not in found.text
    assert drift_notifications(report(old)) == []
    errors = drift_notifications(report(StageDrift("db", DriftStatus.ERROR, error="never applied")))
    assert [n.event for n in errors] == ["failed"] and "db: never applied" in errors[0].text


def test_schedule_failed_event():
    found = schedule_failed(runbook="site", workspace="dev", schedule="nightly", action="drift",
                            exit_code=1, run_id="r9", log_tail=["boom"], log_path="/l")
    assert found.event == "schedule_failed" and "exited with code 1" in found.text
    assert found.data["log_tail"] == ["boom"]
