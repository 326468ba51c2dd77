"""HTTP stages: request a URL until the response meets the expectations, with urllib only."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import ValidationError

from iacorch.drivers.base import StageContext
from iacorch.model.actions import HttpAction, HttpExpect
from iacorch.model.fields import RuleError
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult
from iacorch.model.status import StageStatus

BODY_LIMIT = 64 * 1024          # characters of body kept in outputs
_READ_LIMIT = 4 * 1024 * 1024   # bytes read for JSON parsing; the rest is never read
_EXCERPT = 200                  # characters of body quoted in a failure message


@dataclass(frozen=True, slots=True)
class Response:
    """What came back from one request."""

    status: int
    headers: Mapping[str, str]
    body: str
    json: Any = None

    def outputs(self) -> dict[str, Any]:
        return {"status": self.status, "headers": dict(self.headers), "json": self.json,
                "body": self.body[:BODY_LIMIT]}


@dataclass(frozen=True, slots=True)
class BasicAuth:
    """`user:password@` taken out of a URL, to be sent as an Authorization header instead."""

    url: str        # the URL without them
    user: str
    password: str
    written: str    # the password as the URL wrote it (percent-encoded)

    @property
    def header(self) -> str:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return f"Basic {token}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """What the masker must learn: the password as written and decoded, and the
        `user:password` that the header carries in base64."""
        return self.password, self.written, f"{self.user}:{self.password}"


def basic_auth(url: str) -> BasicAuth | None:
    """The credentials in `url` (`http://user:password@host/`), or None when it has none."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, written = userinfo.partition(":")
    return BasicAuth(url.replace(parts.netloc, host, 1), unquote(user), unquote(written),
                     written)


def _credentials_as_header(action: HttpAction, masker: Masker) -> HttpAction:
    """The action with URL credentials moved to an Authorization header (an explicit
    header wins), and their values taught to the masker before anything is logged."""
    auth = basic_auth(action.url)
    if auth is None:
        return action
    masker.add(auth.secrets)
    headers = dict(action.headers)
    if not any(name.lower() == "authorization" for name in headers):
        headers["Authorization"] = auth.header
    return action.model_copy(update={"url": auth.url, "headers": headers})


def request_body(body: Any, headers: Mapping[str, str]) -> tuple[bytes | None, dict[str, str]]:
    """Encode a runbook body: text as is, anything else as JSON (with its content-type)."""
    headers = {str(k): str(v) for k, v in headers.items()}
    if body is None:
        return None, headers
    if isinstance(body, str):
        return body.encode(), headers
    if not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(body).encode(), headers


def parse_body(raw: bytes, content_type: str, charset: str | None) -> tuple[str, Any]:
    """The body as text, and its JSON value when it is JSON (None otherwise)."""
    try:
        text = raw.decode(charset or "utf-8", errors="replace")
    except LookupError:                       # a charset Python does not know
        text = raw.decode("utf-8", errors="replace")
    if "json" in content_type.lower() or text.lstrip()[:1] in ("{", "["):
        try:
            return text, json.loads(text)
        except ValueError:
            pass
    return text, None


def json_mismatch(expected: Any, actual: Any, path: str = "$") -> str | None:
    """Where `actual` fails to contain `expected` (objects match as subsets), or None."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{path} is {_json(actual)}, expected an object"
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key} is missing"
            found = json_mismatch(value, actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{path} is {_json(actual)}, expected {_json(expected)}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            found = json_mismatch(want, got, f"{path}[{index}]")
            if found:
                return found
        return None
    same_kind = isinstance(expected, bool) == isinstance(actual, bool)
    if not same_kind or expected != actual:
        return f"{path} is {_json(actual)}, expected {_json(expected)}"
    return None


def expectation_problems(expect: HttpExpect, response: Response) -> list[str]:
    """Every way `response` misses `expect`; empty when it meets it."""
    problems = []
    wanted = expect.status if isinstance(expect.status, list) else [expect.status]
    if response.status not in wanted:
        problems.append(f"status {response.status}, expected {_statuses(wanted)}")
    if expect.body_contains is not None and expect.body_contains not in response.body:
        problems.append(f"body does not contain {expect.body_contains!r}; "
                        f"it starts {_excerpt(response.body)!r}")
    if expect.json_ is not None:
        if response.json is None:
            problems.append(f"body is not JSON, expected JSON containing {_json(expect.json_)}; "
                            f"it starts {_excerpt(response.body)!r}")
        else:
            found = json_mismatch(expect.json_, response.json)
            if found:
                problems.append(f"JSON {found}")
    return problems


def fetch(action: HttpAction, timeout: float) -> Response | str:
    """One request; a response of any status, or a sentence saying why none came back."""
    data, headers = request_body(action.body, action.headers)
    request = urllib.request.Request(action.url, data=data, headers=headers,
                                     method=action.method)
    context = None
    if action.url.lower().startswith("https") and not action.verify_tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as reply:
            return _response(reply.status, reply)
    except urllib.error.HTTPError as error:   # 4xx and 5xx still carry a response
        with error:
            return _response(error.code, error)
    except urllib.error.URLError as error:
        return _no_response(error.reason)
    except (OSError, ValueError, http.client.HTTPException) as error:
        return _no_response(error)   # timeouts, resets, a garbled status line or headers


class HttpDriver:
    """Checks an HTTP endpoint: status, body text and JSON, retried with `until`."""

    def required_tools(self, action: Mapping[str, Any]) -> list[str]:
        """Nothing: the standard library speaks HTTP."""
        return []

    def install_hint(self, tool: str) -> str:
        """Never asked: an http stage needs no program."""
        return ""

    def plan(self, ctx: StageContext) -> StageResult:
        """Say what would be checked; no request is made."""
        url = str(ctx.spec.action.get("url", ""))
        auth = basic_auth(url)
        shown = ctx.masker.mask(auth.url if auth is not None else url)
        return StageResult(status=StageStatus.SUCCEEDED, details={"would_check": shown})

    def apply(self, ctx: StageContext) -> StageResult:
        """Request the URL until the expectations hold or the attempts run out."""
        try:
            action = HttpAction.model_validate(ctx.spec.action)
        except ValidationError as error:
            return _invalid_action(error, ctx.masker)
        action = _credentials_as_header(action, ctx.masker)
        attempts, log = action.until.attempts, list[str]()
        target = f"{action.method} {ctx.masker.mask(action.url)}"
        for attempt in range(1, attempts + 1):
            remaining = ctx.remaining_timeout()
            if ctx.cancel.interrupted:
                return StageResult.failure("interrupted", output_tail=tuple(log),
                                           interrupted=True)
            if remaining is not None and remaining <= 0:
                return StageResult.failure(
                    f"timed out after {ctx.spec.timeout or 0:g}s", output_tail=tuple(log),
                    hint="raise the stage's timeout, or lower until.attempts or until.interval")
            started = time.monotonic()
            response = fetch(action, min(action.timeout, remaining or action.timeout))
            problems = ([response] if isinstance(response, str)
                        else expectation_problems(action.expect, response))
            outcome = "ok" if not problems else "; ".join(problems)
            code = "no response" if isinstance(response, str) else f"{response.status}"
            line = ctx.masker.mask(f"attempt {attempt}/{attempts}: {target} -> {code} "
                                   f"({time.monotonic() - started:.2f}s): {outcome}")
            ctx.log(line)
            log.append(line)
            if not problems and isinstance(response, Response):
                outputs = response.outputs()
                sensitive = frozenset(name for name, value in outputs.items()
                                      if ctx.masker.mask_value(value) != value)
                return StageResult(status=StageStatus.SUCCEEDED, outputs=outputs,
                                   sensitive_outputs=sensitive, output_tail=tuple(log),
                                   details={"attempts": attempt})
            if attempt < attempts and ctx.cancel.wait(action.until.interval):
                return StageResult.failure("interrupted", output_tail=tuple(log),
                                           interrupted=True)
        tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
        return StageResult.failure(
            ctx.masker.mask(f"{target}: {'; '.join(problems)} (after {tries})"),
            hint="check the service and its logs; widen until.attempts or until.interval "
                 "if it needs longer to come up",
            output_tail=tuple(log[-40:]))

    def destroy(self, ctx: StageContext) -> StageResult:
        """Nothing to destroy: a check changes nothing."""
        return StageResult(status=StageStatus.SKIPPED, details={
            "reason": "http stages have no destroy; give the stage a rollback"})

    def drift(self, ctx: StageContext) -> StageResult:
        """Nothing to compare: a check declares no desired state."""
        return StageResult(status=StageStatus.SKIPPED, details={
            "reason": "http stages have no drift check: a request declares no desired state"})


def _invalid_action(error: ValidationError, masker: Masker) -> StageResult:
    """A rendered action the format refuses, such as a URL a value made unusable."""
    for detail in error.errors(include_url=False):
        rule = detail.get("ctx", {}).get("error")
        if isinstance(rule, RuleError):
            field = ".".join(map(str, detail["loc"]))
            return StageResult.failure(
                masker.mask(f"the rendered `{field}` is unusable: {rule.message}"),
                hint=masker.mask(rule.hint))
    return StageResult.failure(
        f"invalid http action: {masker.mask(str(error))}",
        hint="the runbook compiler should have caught this; check the rendered values")


def _response(status: int, reply: Any) -> Response:
    raw = reply.read(_READ_LIMIT)
    headers: dict[str, str] = {}
    for name, value in reply.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    text, parsed = parse_body(raw, headers.get("content-type", ""),
                              reply.headers.get_content_charset())
    return Response(status, headers, text, parsed)


def _no_response(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "no response: timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "no response: connection refused"
    if isinstance(reason, OSError) and reason.strerror:
        return f"no response: {reason.strerror.lower()}"
    return f"no response: {reason}"


def _statuses(wanted: list[int]) -> str:
    return str(wanted[0]) if len(wanted) == 1 else "one of " + ", ".join(map(str, wanted))


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def _json(value: Any) -> str:
    return json.dumps(value)[:_EXCERPT]
