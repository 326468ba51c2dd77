"""The terminal prompt for an approval gate.

A gate asks from a stage worker thread, and Python runs signal handlers only in
the main thread: a Ctrl-C there sets the run's cancel token and never reaches a
blocking input(). So the prompt reads the terminal itself, a line at a time,
looking at the token between polls.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable, Sequence

import click

from iacorch.engine.gates import GateAnswer, GateRequest
from iacorch.model.results import diff_preview
from iacorch.model.status import Choice

_POLL = 0.1  # seconds between looks at the cancel token while waiting for a line


def terminal_prompt(pause: Callable[[], None], resume: Callable[[], None],
                    stop: Callable[[], bool]) -> Callable[[GateRequest], GateAnswer | None]:
    """A prompt that stops the live view while it asks, so the question is readable.

    None leaves the gate waiting: the person chose `wait`; or `stop()` turned true
    (Ctrl-C, SIGTERM: the run ends interrupted); or the input ended (EOF), after
    which it asks no more and the run suspends as it would in CI.
    """
    terminal = _Terminal(sys.stdin.fileno(), stop)

    def ask(request: GateRequest) -> GateAnswer | None:
        if terminal.closed:
            return None
        pause()
        try:
            return _ask(request, terminal)
        finally:
            resume()

    return ask


class _Terminal:
    """Lines typed at a terminal in canonical mode (one read() returns one line)."""

    def __init__(self, fd: int, stop: Callable[[], bool]) -> None:
        self.fd, self.stop = fd, stop
        self.closed = False

    def line(self) -> str | None:
        """The next line typed; None once stop() is true or the input has ended."""
        while not self.stop():
            if not select.select([self.fd], [], [], _POLL)[0]:
                continue
            data = os.read(self.fd, 4096)
            if not data:
                self.closed = True
                click.echo("\n  no answer: the input is closed; the gate stays waiting",
                           err=True)
                return None
            return data.decode(errors="replace").strip()
        return None

    def choose(self, question: str, choices: Sequence[str], default: str | None) -> str | None:
        """Ask until the answer is one of `choices` (empty: the default, if there is one)."""
        shown = f" [{default}]" if default is not None else ""
        while True:
            click.echo(f"{question} ({', '.join(choices)}){shown}: ", nl=False, err=True)
            answer = self.line()
            if answer is None or answer in choices:
                return answer
            if not answer and default is not None:
                return default
            click.echo(f"  choose one of: {', '.join(choices)}", err=True)

    def text(self, question: str, default: str | None) -> str | None:
        """Ask for free text; an empty answer is the default, asked again when there is none."""
        shown = f" [{default}]" if default else ""
        while True:
            click.echo(f"{question}{shown}: ", nl=False, err=True)
            answer = self.line()
            if answer is None or answer:
                return answer
            if default is not None:
                return default


def _ask(request: GateRequest, terminal: _Terminal) -> GateAnswer | None:
    click.echo("", err=True)
    click.secho(f"Approval needed at `{request.gate}`", bold=True, err=True)
    if request.message:
        click.echo(f"  {request.message}", err=True)
    have = f", has {', '.join(request.approved_by)}" if request.approved_by else ""
    click.echo(f"  run started by {request.asked_by or '?'}; needs {request.require} "
               f"approver(s){have}", err=True)
    for stage_id, summary in request.changes.items():
        click.echo(f"  {stage_id}: {summary}", err=True)
        for line in diff_preview(request.diffs.get(stage_id, ""), " " * 6):
            click.echo(line, err=True)
    choice = terminal.choose("  approve, reject, or leave it waiting?",
                             ["approve", "reject", "wait"], "wait")
    if choice in (None, "wait"):
        return None
    inputs: dict[str, str] = {}
    if choice == "approve":
        for name, spec in request.inputs.items():
            label = f"  {name}{' (' + spec['description'] + ')' if spec.get('description') else ''}"
            default = None if spec.get("default") is None else str(spec["default"])
            choices = spec.get("choices")
            value = (terminal.choose(label, [str(c) for c in choices], default) if choices
                     else terminal.text(label, default))
            if value is None:
                return None
            inputs[name] = value
    comment = terminal.text("  comment", "")
    if comment is None:
        return None
    return GateAnswer(Choice(choice), inputs, comment or None)
