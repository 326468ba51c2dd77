"""Ansible job events, as ansible-runner's `awx_display` callback emits them.

The callback writes each event's data to `<uuid>-partial.json` and marks where
the event starts and ends in the child's output with base64 tokens wrapped in
ANSI escapes. `EventStream` turns output lines back into ordered events;
`PlayRecord` folds events into what the driver reports: log lines, progress,
per-host stats, `set_stats` outputs, failures and would-be changes. Those are
pure. `EventReader` is the one part with side effects: it reads and removes the
raw event files, and writes masked copies as the stage's artifacts.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from iacorch.drivers.ansible_check import detail_lines, not_checkable, result_diff

if TYPE_CHECKING:
    from iacorch.drivers.base import StageContext
    from iacorch.model.masking import Masker

Event = dict[str, Any]

_MARKER = re.compile(r"\x1b\[K((?:[A-Za-z0-9+/=]+\x1b\[\d+D)+)\x1b\[K")
_CURSOR_MOVE = re.compile(r"\x1b\[\d+D")

RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}  # runner_on_async_ok/failed are left out: the task's runner_on_ok/failed follows them
# Events that only carry text Ansible printed (warnings, errors, -v output).
DISPLAY_EVENTS = frozenset({"verbose", "warning", "error", "deprecated", "debug",
                            "system_warning"})
HOST_STAT_KEYS = {"ok": "ok", "changed": "changed", "failures": "failures",
                  "dark": "unreachable", "skipped": "skipped", "rescued": "rescued",
                  "ignored": "ignored"}
_MESSAGE_LIMIT = 500
_ERROR_STARTS = ("ERROR!", "[ERROR]", "The error appears to be in")


def strip_markers(line: str) -> str:
    """The line as a person would have seen it: event markers removed."""
    return _MARKER.sub("", line)


def decode_marker(token: str) -> dict[str, Any]:
    """The JSON carried by one marker (`{"uuid": ...}` starts an event, `{}` ends it)."""
    try:
        data = json.loads(base64.b64decode(_CURSOR_MOVE.sub("", token)))
    except (ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


class EventStream:
    """Rebuilds job events from the child's output, one line at a time.

    `load(uuid)` returns the event's partial data (None when it is gone);
    `on_event` receives each finished event with its printed text in `stdout`;
    `on_text` receives text printed outside any event (tracebacks, early errors).
    """

    def __init__(self, load: Callable[[str], Event | None],
                 on_event: Callable[[Event], None],
                 on_text: Callable[[str], None]) -> None:
        self._load = load
        self._on_event = on_event
        self._on_text = on_text
        self._current: Event | None = None
        self._stdout: list[str] = []
        self.counter = 0

    def feed(self, line: str) -> None:
        """Consume one output line (without its newline)."""
        position = 0
        for match in _MARKER.finditer(line):
            self._text(line[position:match.start()])
            self._marker(decode_marker(match.group(1)))
            position = match.end()
        self._text(line[position:], end_of_line=True)

    def close(self) -> None:
        """The output ended: finish the event in progress, if any."""
        self._finish()

    def _text(self, text: str, end_of_line: bool = False) -> None:
        if self._current is not None:
            if text or end_of_line:
                self._stdout.append(text + ("\n" if end_of_line else ""))
        elif text.strip():
            self._on_text(text.rstrip())

    def _marker(self, data: dict[str, Any]) -> None:
        self._finish()
        if data.get("uuid"):    # an event starts; `{}` marks where one ends
            self._current = self._load(str(data["uuid"]))

    def emit(self, event: Event, stdout: str = "") -> None:
        """Number an event and hand it on (also for events whose markers were lost)."""
        self.counter += 1
        self._on_event({**event, "counter": self.counter, "stdout": stdout})

    def _finish(self) -> None:
        if self._current is None:
            return
        event, stdout = self._current, "".join(self._stdout).strip("\r\n")
        self._current, self._stdout = None, []
        self.emit(event, stdout)


def result_status(event: Mapping[str, Any]) -> str | None:
    """ok, changed, failed, ignored, skipped or unreachable for a task result; else None."""
    status = RESULT_EVENTS.get(str(event.get("event")))
    data = event.get("event_data") or {}
    if status == "ok" and _res(data).get("changed"):
        return "changed"
    if status == "failed" and data.get("ignore_errors"):
        return "ignored"
    return status


def log_lines(event: Mapping[str, Any]) -> list[str]:
    """Human lines for an event: `TASK name | host | status` per task result, plays, recap."""
    data = event.get("event_data") or {}
    kind = event.get("event")
    if kind == "playbook_on_play_start":
        return [f"PLAY {data.get('name') or data.get('play') or ''}".rstrip()]
    if kind == "playbook_on_no_hosts_matched":
        return ["PLAY skipped: no hosts matched"]
    if kind == "playbook_on_stats":
        return [f"RECAP {host} | " + " ".join(f"{k}={v}" for k, v in stats.items())
                for host, stats in host_stats(data).items()]
    if kind in DISPLAY_EVENTS and kind != "debug":
        return [line for line in str(event.get("stdout") or "").splitlines() if line.strip()]
    status = result_status(event)
    if status is None:
        return []
    line = f"TASK {data.get('task') or '?'} | {data.get('host') or '?'} | {status}"
    if status in ("failed", "ignored", "unreachable"):
        line += f" | {module_message(_res(data))}"
    return [line]


def progress(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """A progress dict for the console: play and task starts, task results (a change with
    its diff), the recap."""
    data = event.get("event_data") or {}
    kind = event.get("event")
    if kind == "playbook_on_play_start":
        return {"kind": "play", "play": data.get("name") or data.get("play")}
    if kind == "playbook_on_task_start":
        return {"kind": "task", "task": data.get("task"), "play": data.get("play")}
    if kind == "playbook_on_stats":
        return {"kind": "recap", "hosts": host_stats(data)}
    status = result_status(event)
    if status is None:
        return None
    update = {"kind": "result", "task": data.get("task"), "host": data.get("host"),
              "status": status, "action": data.get("task_action")}
    if status == "changed" and (diff := result_diff(_res(data))):
        update["diff"] = diff
    return update


def module_message(res: Mapping[str, Any]) -> str:
    """What the module said went wrong: `msg`, the end of stderr, failed loop items."""
    if "censored" in res:
        return "output hidden by no_log"
    parts = [_text(res.get("msg"))]
    for key in ("stderr", "module_stderr", "stdout"):
        lines = [s for s in _text(res.get(key)).splitlines() if s.strip()]
        if lines and not parts[0].endswith(lines[-1]):
            parts.append(lines[-1])
            break
    for item in res.get("results") or ():
        if isinstance(item, Mapping) and item.get("failed"):
            label = item.get("_ansible_item_label", item.get("item"))
            parts.append(f"item {label}: {module_message(item)}")
    message = ": ".join(p for p in parts if p) or "no message from the module"
    return message if len(message) <= _MESSAGE_LIMIT else message[:_MESSAGE_LIMIT] + "..."


def host_stats(stats_data: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """`playbook_on_stats` data -> {host: {ok, changed, failures, unreachable, skipped,
    rescued, ignored}}, as Ansible's PLAY RECAP counts them."""
    hosts: set[str] = set()
    for key in (*HOST_STAT_KEYS, "processed"):
        hosts.update((stats_data.get(key) or {}).keys())
    return {host: {name: int((stats_data.get(key) or {}).get(host, 0))
                   for key, name in HOST_STAT_KEYS.items()} for host in sorted(hosts)}


def published_stats(stats_data: Mapping[str, Any]) -> dict[str, Any]:
    """`playbook_on_stats` data -> what `set_stats` published for the whole run."""
    data = stats_data.get("artifact_data")
    return dict(data) if isinstance(data, Mapping) else {}


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """One task result on one host that the driver reports."""

    host: str
    task: str
    action: str
    status: str
    message: str = ""
    diff: str = ""


@dataclass
class PlayRecord:
    """Everything a run's events said, folded into what the stage result needs."""

    outcomes: list[TaskOutcome] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    published: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    not_checkable: list[dict[str, str]] = field(default_factory=list)   # check_mode held on

    def add(self, event: Mapping[str, Any]) -> None:
        """Fold one event in."""
        kind = event.get("event")
        data = event.get("event_data") or {}
        if kind == "playbook_on_stats":
            self.stats = dict(data)
            self.published = published_stats(data)
        elif kind == "error" and event.get("stdout"):
            self.errors.append(str(event["stdout"]).strip())
        elif (unchecked := not_checkable(event)) is not None:
            self.not_checkable.append(unchecked)
        status = result_status(event)
        if status is None:
            return
        res = _res(data)
        self.outcomes.append(TaskOutcome(
            host=str(data.get("host") or "?"), task=str(data.get("task") or "?"),
            action=str(data.get("task_action") or data.get("resolved_action") or ""),
            status=status,
            message=module_message(res) if status in ("failed", "unreachable") else "",
            diff=result_diff(res)))

    @property
    def failures(self) -> list[TaskOutcome]:
        """Failed and unreachable results that ended their host: the causes."""
        return self._failures_and_rescued()[0]

    @property
    def rescued(self) -> list[TaskOutcome]:
        """Failed results a `rescue:` recovered from (expected failures, not causes)."""
        return self._failures_and_rescued()[1]

    def _failures_and_rescued(self) -> tuple[list[TaskOutcome], list[TaskOutcome]]:
        # A failure event does not say whether a rescue will follow, but the recap counts
        # only the failures that were not rescued, and a host stops at such a failure
        # (an `always:` may run after it): so per host, its last `failures + unreachable`
        # results are the causes, and the ones before them were rescued.
        failed = [o for o in self.outcomes if o.status in ("failed", "unreachable")]
        if self.stats is None:          # no recap (the play was cut short): all may be causes
            return failed, []
        stats = self.host_stats()
        left = Counter(o.host for o in failed)
        causes: list[TaskOutcome] = []
        rescued: list[TaskOutcome] = []
        for outcome in failed:
            left[outcome.host] -= 1
            counted = stats.get(outcome.host, {})
            ended = counted.get("failures", 0) + counted.get("unreachable", 0)
            (causes if left[outcome.host] < ended else rescued).append(outcome)
        return causes, rescued

    @property
    def changes(self) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.status == "changed"]

    def host_stats(self) -> dict[str, dict[str, int]]:
        return host_stats(self.stats or {})

    def set_stats(self) -> dict[str, Any]:
        """Data published with `set_stats` (aggregate, not per host)."""
        return dict(self.published)

    def failure_message(self) -> str | None:
        """`task 'x' failed on host 'h': module message`, one clause per failure: the causes
        first, then the failures a `rescue:` recovered from, said to be rescued."""
        causes, rescued = self._failures_and_rescued()
        failures = causes + rescued
        if not failures:
            return None
        clauses = [f"task '{f.task}' {'failed' if f.status == 'failed' else 'was unreachable'}"
                   f"{' (rescued)' if n >= len(causes) else ''} on host '{f.host}': {f.message}"
                   for n, f in enumerate(failures[:5])]
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        return "; ".join(clauses) + more


def _res(data: Mapping[str, Any]) -> Mapping[str, Any]:
    res = data.get("res")
    return res if isinstance(res, Mapping) else {}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value)
    return str(value).strip()


def masked_json(masker: Masker, value: Any, indent: int | None = 2) -> str:
    """JSON for an artifact, masked before encoding too: JSON escapes could hide a secret."""
    text = json.dumps(_mask_keys(masker, masker.mask_value(value)), indent=indent, default=str,
                      ensure_ascii=False)
    return masker.mask(text)


def _mask_keys(masker: Masker, value: Any) -> Any:
    if isinstance(value, dict):
        return {masker.mask(str(k)): _mask_keys(masker, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_keys(masker, v) for v in value]
    return value


def write_private(path: Path, text: str) -> Path:
    """Write `text` to a file only its owner can read."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


class EventReader:
    """The child's output lines in; log lines, progress, a PlayRecord and masked artifacts out."""

    def __init__(self, ctx: StageContext, scratch: Path, artifact_dir: Path) -> None:
        self.ctx = ctx
        self.record = PlayRecord()
        self.tail: deque[str] = deque(maxlen=40)
        self._partials = scratch / "job_events"
        self._saved = artifact_dir / "job_events"
        self._saved.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._stdout = (artifact_dir / "stdout").open("w", encoding="utf-8")
        self._stream = EventStream(self._load, self._event, self._text)

    def feed(self, line: str) -> None:
        """One output line, already masked by the ProcessRunner."""
        shown = strip_markers(line)
        if shown.strip() or not line.strip():
            self._stdout.write(shown + "\n")
        self._stream.feed(line)

    def close(self) -> None:
        """Finish the stream, then report events whose markers never reached the output."""
        self._stream.close()
        leftovers = [e for e in map(self._read, self._partials.glob("*-partial.json")) if e]
        for event in sorted(leftovers, key=lambda e: str(e.get("created", ""))):
            self._stream.emit(event)
        self._stdout.close()

    def _load(self, uuid: str) -> Event | None:
        if not uuid.replace("-", "").isalnum():
            return None
        return self._read(self._partials / f"{uuid}-partial.json")

    @staticmethod
    def _read(path: Path) -> Event | None:
        try:
            event = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        path.unlink(missing_ok=True)
        return event if isinstance(event, dict) else None

    def _event(self, event: Event) -> None:
        # Mask first: messages and diffs are cut to length later, maybe inside a secret.
        masked = cast(Event, self.ctx.masker.mask_value(event))
        name = f"{event['counter']}-{str(event.get('uuid', 'x'))[:64].replace('/', '_')}.json"
        write_private(self._saved / name, masked_json(self.ctx.masker, masked, indent=None))
        self.record.add(masked)
        if event.get("event") == "playbook_on_stats":   # outputs are data, not log text
            self.record.published = published_stats(event.get("event_data") or {})
        for line in log_lines(masked) + detail_lines(masked):
            self._say(line)
        update = progress(masked)
        if update is not None:
            self.ctx.on_progress({"stage": self.ctx.spec.stage_id, **update})

    def _text(self, text: str) -> None:
        # Before the callback loads (bad YAML, unknown module) errors are plain text.
        if text.lstrip().startswith(_ERROR_STARTS):
            line = text.strip().removesuffix(", but may")   # ansible wraps this sentence
            self.record.errors.append(self.ctx.masker.mask(line))
        self._say(text)

    def _say(self, line: str) -> None:
        self.ctx.log(line)
        self.tail.append(self.ctx.masker.mask(line))
