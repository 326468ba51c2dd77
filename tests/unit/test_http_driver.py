"""HttpDriver: request encoding and expectation matching as pure functions; the retry loop
against a scripted `fetch` (no network, no sleep)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from iacorch.drivers import execute, http, load_driver
from iacorch.drivers.base import StageContext
from iacorch.drivers.http import (
    BasicAuth,
    HttpDriver,
    Response,
    basic_auth,
    expectation_problems,
    json_mismatch,
    parse_body,
    request_body,
)
from iacorch.model.actions import HttpAction, HttpExpect, url_problem
from iacorch.model.masking import Masker
from iacorch.model.results import StageSpec
from iacorch.model.status import Operation, StageStatus
from iacorch.process import CancelToken, ProcessRunner


def reply(status: int = 200, body: str = "", json: Any = None,
          headers: Mapping[str, str] | None = None) -> Response:
    return Response(status, headers or {}, body, json)


def test_load_driver_finds_the_http_driver():
    assert isinstance(load_driver("http"), HttpDriver)
    assert HttpDriver().required_tools({"url": "http://x"}) == []


def test_request_body_text_is_sent_as_is_and_data_as_json():
    assert request_body(None, {"X-A": 1}) == (None, {"X-A": "1"})
    assert request_body("a=1&b=2", {}) == (b"a=1&b=2", {})
    assert request_body({"replicas": 2}, {}) == (
        b'{"replicas": 2}', {"Content-Type": "application/json"})
    assert request_body([1], {"content-type": "application/vnd.x+json"}) == (
        b"[1]", {"content-type": "application/vnd.x+json"})


@pytest.mark.parametrize(("raw", "content_type", "charset", "text", "parsed"), [
    (b'{"ok": true}', "application/json", None, '{"ok": true}', {"ok": True}),
    (b' [1, 2]', "text/plain", None, " [1, 2]", [1, 2]),
    (b"42", "text/plain", None, "42", None),               # plain text is not guessed at
    (b"42", "application/problem+json", None, "42", 42),
    (b"{broken", "application/json", None, "{broken", None),
    (b"caf\xe9", "text/plain", "latin-1", "caf\xe9", None),
    (b"bad \xff", "text/plain", "no-such-charset", "bad \ufffd", None),
])
def test_parse_body(raw, content_type, charset, text, parsed):
    assert parse_body(raw, content_type, charset) == (text, parsed)


@pytest.mark.parametrize(("expected", "actual", "problem"), [
    ({"status": "up"}, {"status": "up", "version": 3}, None),
    ({"db": {"ok": True}}, {"db": {"ok": True, "ms": 2}, "x": 1}, None),
    ({"status": "up"}, {"status": "down"}, '$.status is "down", expected "up"'),
    ({"db": {"ok": True}}, {"db": {}}, "$.db.ok is missing"),
    ({"db": {"ok": True}}, {"db": "fine"}, '$.db is "fine", expected an object'),
    ({"n": 1}, {"n": True}, "$.n is true, expected 1"),    # JSON true is not 1
    ({"n": 1}, {"n": 1.0}, None),
    ({"hosts": [{"up": True}]}, {"hosts": [{"up": True, "name": "a"}]}, None),
    ({"hosts": [{"up": True}]}, {"hosts": [{"up": False}]},
     "$.hosts[0].up is false, expected true"),
    ({"hosts": [1]}, {"hosts": [1, 2]}, "$.hosts is [1, 2], expected [1]"),
])
def test_json_mismatch_treats_objects_as_subsets(expected, actual, problem):
    assert json_mismatch(expected, actual) == problem


def test_expectations_met():
    expect = HttpExpect(status=[200, 204], body_contains="ok", json={"status": "ok"})
    assert expectation_problems(expect, reply(204, '{"status": "ok"}', {"status": "ok"})) == []


def test_every_missed_expectation_is_named_with_what_came_back():
    expect = HttpExpect(status=200, body_contains="healthy", json={"status": "ok"})
    problems = expectation_problems(expect, reply(503, "maintenance"))
    assert problems == [
        "status 503, expected 200",
        "body does not contain 'healthy'; it starts 'maintenance'",
        'body is not JSON, expected JSON containing {"status": "ok"}; it starts \'maintenance\'',
    ]
    assert expectation_problems(HttpExpect(status=[200, 204]), reply(500)) == [
        "status 500, expected one of 200, 204"]
    assert expectation_problems(HttpExpect(json={"a": 1}), reply(json={"a": 2}, body="x")) == [
        "JSON $.a is 2, expected 1"]


def test_a_long_body_is_quoted_only_in_part():
    problem = expectation_problems(HttpExpect(body_contains="ok"), reply(body="x" * 5000))[0]
    assert len(problem) < 300 and problem.endswith("...'")


def test_outputs_truncate_the_body():
    outputs = reply(200, "y" * (http.BODY_LIMIT + 10), headers={"a": "b"}).outputs()
    assert len(outputs["body"]) == http.BODY_LIMIT
    assert outputs["status"] == 200 and outputs["headers"] == {"a": "b"}


def context(tmp_path: Path, action: Mapping[str, Any], *, secrets: tuple[str, ...] = (),
            cancel: CancelToken | None = None, lines: list[str] | None = None,
            timeout: float | None = None) -> StageContext:
    spec = StageSpec(run_id="r1", stage_id="smoke", driver="http",
                     operation=Operation.APPLY, action=action, root_dir=str(tmp_path),
                     work_dir=str(tmp_path / "w"), state_dir=str(tmp_path), timeout=timeout)
    seen = lines if lines is not None else []
    return StageContext(spec=spec, process=ProcessRunner(orphan_guard=False),
                        masker=Masker(secrets), cancel=cancel or CancelToken(),
                        on_line=seen.append)


@pytest.fixture
def replies(monkeypatch):
    """Script what `fetch` returns, in order."""
    queue: list[Response | str] = []

    def fake_fetch(action, timeout):
        return queue.pop(0)

    monkeypatch.setattr(http, "fetch", fake_fetch)
    return queue


def test_apply_retries_until_the_expectations_hold(tmp_path, replies):
    replies += ["no response: connection refused", reply(500, "boom"),
                reply(200, '{"v": 2}', {"v": 2}, {"content-type": "application/json"})]
    lines: list[str] = []
    action = {"url": "http://svc/health", "expect": {"json": {"v": 2}},
              "until": {"attempts": 5, "interval": 0}}
    result = HttpDriver().apply(context(tmp_path, action, lines=lines))
    assert result.status is StageStatus.SUCCEEDED
    assert result.outputs == {"status": 200, "headers": {"content-type": "application/json"},
                              "json": {"v": 2}, "body": '{"v": 2}'}
    assert result.details == {"attempts": 3} and replies == []
    assert lines[0].startswith("attempt 1/5: GET http://svc/health -> no response")
    assert "connection refused" in lines[0] and "-> 500" in lines[1]
    assert lines[2].endswith(": ok")


def test_apply_fails_saying_what_was_expected_and_what_came_back_masked(tmp_path, replies):
    replies += [reply(401, "bad token tok-9999"), reply(401, "bad token tok-9999")]
    action = {"url": "http://svc/?key=tok-9999", "expect": {"status": 200},
              "until": {"attempts": 2, "interval": "0s"}}
    result = HttpDriver().apply(context(tmp_path, action, secrets=("tok-9999",)))
    assert result.status is StageStatus.FAILED
    assert result.error == "GET http://svc/?key=***: status 401, expected 200 (after 2 attempts)"
    assert len(result.output_tail) == 2
    assert all("tok-9999" not in line for line in result.output_tail)


def test_an_interrupt_between_attempts_stops_at_once(tmp_path, replies):
    cancel = CancelToken()
    replies.append(reply(500))
    action = {"url": "http://svc", "until": {"attempts": 100, "interval": 3600}}
    cancel_after_first = context(tmp_path, action, cancel=cancel)
    cancel_after_first.on_line = lambda line: cancel.interrupt()
    result = HttpDriver().apply(cancel_after_first)
    assert result.status is StageStatus.INTERRUPTED and replies == []


def test_the_stage_timeout_caps_each_request(tmp_path, monkeypatch):
    seen: list[float] = []
    monkeypatch.setattr(http, "fetch", lambda action, timeout: seen.append(timeout) or reply())
    HttpDriver().apply(context(tmp_path, {"url": "http://svc", "timeout": 30}, timeout=5.0))
    assert 0 < seen[0] <= 5.0


def test_an_exhausted_stage_timeout_fails_before_requesting(tmp_path, replies):
    result = HttpDriver().apply(context(tmp_path, {"url": "http://svc"}, timeout=0.0))
    assert result.status is StageStatus.FAILED and result.error == "timed out after 0s"


def test_an_invalid_action_is_a_failed_result(tmp_path, replies):
    result = HttpDriver().apply(context(tmp_path, {"url": "http://svc", "method": "FETCH"}))
    assert result.status is StageStatus.FAILED
    assert result.error is not None and result.error.startswith("invalid http action")


def test_plan_drift_and_destroy_make_no_request(tmp_path, replies):
    ctx = context(tmp_path, {"url": "https://svc/?t=tok-1234"}, secrets=("tok-1234",))
    plan = HttpDriver().plan(ctx)
    assert plan.status is StageStatus.SUCCEEDED
    assert plan.details == {"would_check": "https://svc/?t=***"}
    assert HttpDriver().drift(ctx).status is StageStatus.SKIPPED
    assert HttpDriver().destroy(ctx).status is StageStatus.SKIPPED


@pytest.mark.parametrize(("url", "problem"), [
    ("http://svc:8080/health?q=a%20b#x", None),
    ("HTTPS://user:p%40ss@[::1]:8443/", None),
    ("http://bücher.example/", None),                     # an international host is fine
    ("http://svc/q?a=1 2", "the URL has a space at character 17"),
    ("http://svc/\n", "the URL has the unprintable character U+000A at character 12"),
    ("http://svc/\x7f", "the URL has the unprintable character U+007F at character 12"),
    ("http://svc/é", "the URL's path or query has a non-ASCII character"),
    ("file:///etc/passwd", "the URL's scheme must be http: or https:, found `file:`"),
    ("svc:8080/health", "the URL's scheme must be http: or https:, found `svc:`"),
    ("/health", "the URL's scheme must be http: or https:, found none"),
    ("http:///health", "the URL names no host"),
    ("http://svc:80a/", "the URL's port is not a number from 0 to 65535"),
    ("http://[::1/", "the URL's host is not readable: an IPv6 address needs both `[` and `]`"),
])
def test_url_problems_are_sentences_with_a_hint(url, problem):
    found = url_problem(url)
    assert (found.message if found else None) == problem
    assert found is None or found.hint


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/h?t=s3cr3t value", "http://127.0.0.1:9/\x00",
                                 "http://127.0.0.1:9a/", "ftp://127.0.0.1/s3cr3t value"])
def test_a_url_a_template_made_unusable_is_a_user_error_not_a_bug(tmp_path, url):
    lines: list[str] = []
    ctx = context(tmp_path, {"url": url}, secrets=("s3cr3t value",), lines=lines)
    result = execute(ctx)
    assert result.status is StageStatus.FAILED
    assert result.error is not None and result.error.startswith("the rendered `url` is unusable")
    assert result.hint and "bug" not in result.hint
    assert not any("Traceback" in line for line in lines)
    assert "s3cr3t" not in result.error + result.hint


@pytest.mark.parametrize(("url", "expected"), [
    ("http://svc/health", None),
    ("http://svc/a@b?mail=x@y", None),
    ("http://admin:p%40ss@svc:8080/h?x=1",
     BasicAuth("http://svc:8080/h?x=1", "admin", "p@ss", "p%40ss")),
    ("https://deploy@svc/", BasicAuth("https://svc/", "deploy", "", "")),
    ("http://u:a@b@svc/", BasicAuth("http://svc/", "u", "a@b", "a@b")),
])
def test_basic_auth_takes_the_credentials_out_of_the_url(url, expected):
    assert basic_auth(url) == expected


def test_url_credentials_are_sent_as_basic_auth_and_masked(tmp_path, monkeypatch):
    sent: list[HttpAction] = []
    monkeypatch.setattr(http, "fetch", lambda action, timeout: sent.append(action) or
                        reply(401, "denied admin:hunter2"))
    lines: list[str] = []
    ctx = context(tmp_path, {"url": "http://admin:hunter2@svc/h?x=1"}, lines=lines)
    result = HttpDriver().apply(ctx)
    assert sent[0].url == "http://svc/h?x=1"
    assert sent[0].headers == {"Authorization": "Basic YWRtaW46aHVudGVyMg=="}
    assert result.status is StageStatus.FAILED
    written = " ".join([result.error or "", *lines, *result.output_tail])
    assert "GET http://svc/h?x=1 -> 401" in written
    assert "hunter2" not in written and "YWRtaW46aHVudGVyMg" not in written
    assert ctx.masker.mask("Basic YWRtaW46aHVudGVyMg==") == "Basic ***"


def test_an_explicit_authorization_header_wins_over_url_credentials(tmp_path, monkeypatch):
    sent: list[HttpAction] = []
    monkeypatch.setattr(http, "fetch", lambda action, timeout: sent.append(action) or reply())
    action = {"url": "http://admin:hunter2@svc/", "headers": {"authorization": "Bearer t0ken"}}
    HttpDriver().apply(context(tmp_path, action))
    assert sent[0].url == "http://svc/" and sent[0].headers == {"authorization": "Bearer t0ken"}


def test_plan_shows_the_url_without_its_credentials(tmp_path):
    plan = HttpDriver().plan(context(tmp_path, {"url": "http://admin:hunter2@svc/h"}))
    assert plan.details == {"would_check": "http://svc/h"}
