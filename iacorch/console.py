"""What a person (or a CI log) sees while a run goes: plain lines, a live view, or JSON."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from typing import IO, Any

from iacorch.model.events import Event, EventKind
from iacorch.model.results import diff_preview

_STATUS_MARK = {"succeeded": "ok", "failed": "FAILED", "skipped": "skipped",
                "interrupted": "interrupted", "cancelled": "cancelled",
                "waiting_approval": "waiting for approval"}


def _clock(event: Event) -> str:
    return time.strftime("%H:%M:%S", time.localtime(event.time))


class PlainConsole:
    """Timestamped lines that CI logs keep readable.

    Tool output is printed as it comes, prefixed with the stage id; under GitHub
    Actions each stage's output is held back and folded into a ::group:: when the
    stage ends, since parallel stages would otherwise interleave inside a group.
    """

    def __init__(self, stream: IO[str] | None = None, *, show_logs: bool = True,
                 github: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.show_logs = show_logs
        self.github = os.environ.get("GITHUB_ACTIONS") == "true" if github is None else github
        self._held: dict[str, list[str]] = defaultdict(list)
        self._lock = threading.Lock()

    def _write(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def handle(self, event: Event) -> None:
        with self._lock:
            self._handle(event)

    def _handle(self, event: Event) -> None:
        stage = event.stage_id or ""
        data = event.data
        if event.kind is EventKind.STAGE_LOG:
            if not self.show_logs:
                return
            if self.github:
                self._held[stage].append(data["line"])
            else:
                self._write(f"{_clock(event)}   {stage} | {data['line']}")
        elif event.kind is EventKind.STAGE_STARTED:
            attempt = f" (attempt {data['attempt']})" if data.get("attempt", 1) > 1 else ""
            self._write(f"{_clock(event)} > {stage}: {data.get('operation')} "
                        f"{data.get('action')}{attempt}")
        elif event.kind is EventKind.STAGE_FINISHED:
            self._stage_finished(event)
        elif event.kind is EventKind.STAGE_RETRY:
            self._write(f"{_clock(event)} ! {stage}: attempt {data['attempt']} failed "
                        f"({data.get('error')}); retrying in {data['delay']:.1f}s")
        elif event.kind is EventKind.APPROVAL_REQUESTED:
            self._write(f"{_clock(event)} ? {stage}: approval needed"
                        f"{': ' + data['message'] if data.get('message') else ''}")
            for planned, summary in data.get("changes", {}).items():
                self._write(f"      {planned}: {summary}")
                for line in diff_preview(data.get("diffs", {}).get(planned, ""), " " * 10):
                    self._write(line)
        elif event.kind is EventKind.DEADLINE_BREACHED:
            self._write(f"{_clock(event)} ! deadline of {data['deadline']:.0f}s breached")

    def _stage_finished(self, event: Event) -> None:
        stage = event.stage_id or ""
        data = event.data
        held = self._held.pop(stage, [])
        if held:
            self._write(f"::group::{stage}")
            for line in held:
                self._write(line)
            self._write("::endgroup::")
        status = data["status"]
        parts = [_STATUS_MARK.get(status, status)]
        if data.get("elapsed"):
            parts.append(f"in {data['elapsed']:.1f}s")
        if data.get("changes"):
            parts.append(data["changes"])
        if data.get("reason") and status != "succeeded":
            parts.append(f"- {data['reason']}")
        self._write(f"{_clock(event)} {'x' if status == 'failed' else '='} {stage}: "
                    f"{' '.join(parts)}")
        for line in data.get("tail", []) if status == "failed" and not self.show_logs else []:
            self._write(f"      {line}")
        if data.get("hint") and status == "failed":
            self._write(f"      hint: {data['hint']}")


class JsonConsole:
    """One JSON object per event per line, for machines (`--json`)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def handle(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), default=str, sort_keys=True)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class LiveConsole:
    """A live table on a terminal: each stage with its status, elapsed time and last line."""

    def __init__(self, stage_ids: list[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(stderr=False)
        self._rows: dict[str, dict[str, Any]] = {
            sid: {"status": "pending", "started": None, "elapsed": None, "line": ""}
            for sid in stage_ids}
        self._lock = threading.Lock()
        self._live = Live(self._render(), console=self._console, refresh_per_second=8,
                          transient=False, get_renderable=self._render)
        self._live.start()

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table(box=None, pad_edge=False, show_header=False)
        table.add_column(width=2)
        table.add_column(style="bold")
        table.add_column()
        table.add_column(justify="right")
        table.add_column(overflow="ellipsis", no_wrap=True, max_width=60, style="dim")
        done = 0
        styles = {"succeeded": "[green]✓[/]", "failed": "[red]✗[/]", "skipped": "[dim]-[/]",
                  "waiting_approval": "[yellow]?[/]", "interrupted": "[yellow]![/]",
                  "pending": "[dim]·[/]"}
        for stage_id, row in self._rows.items():
            status = row["status"]
            if status not in ("pending", "running"):
                done += 1
            mark: Any = Spinner("dots") if status == "running" else styles.get(status, status)
            elapsed = row["elapsed"]
            if status == "running" and row["started"]:
                elapsed = time.monotonic() - row["started"]
            table.add_row(mark, stage_id, status.replace("_", " "),
                          f"{elapsed:.1f}s" if elapsed is not None else "", row["line"])
        grid = Table.grid()
        grid.add_row(table)
        grid.add_row(ProgressBar(total=max(1, len(self._rows)), completed=done, width=40))
        return grid

    def handle(self, event: Event) -> None:
        sid = event.stage_id
        with self._lock:
            row = self._rows.setdefault(sid or "", {"status": "pending", "started": None,
                                                    "elapsed": None, "line": ""})
            if event.kind is EventKind.STAGE_STARTED:
                row.update(status="running", started=time.monotonic(), line="")
            elif event.kind is EventKind.STAGE_LOG:
                row["line"] = event.data["line"]
            elif event.kind is EventKind.STAGE_FINISHED:
                row.update(status=event.data["status"], elapsed=event.data.get("elapsed"),
                           line=event.data.get("reason", "") if event.data["status"] != "succeeded"
                           else event.data.get("changes", ""))
            elif event.kind is EventKind.APPROVAL_REQUESTED:
                row.update(status="waiting_approval", line=event.data.get("message", ""))

    def pause(self) -> None:
        self._live.stop()

    def resume(self) -> None:
        self._live.start()

    def close(self) -> None:
        self._live.stop()
