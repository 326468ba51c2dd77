"""The terminal prompt for an approval gate."""

from __future__ import annotations

from collections.abc import Callable

import click

from iacorch.engine.gates import GateAnswer, GateRequest
from iacorch.model.results import diff_preview


def terminal_prompt(pause: Callable[[], None], resume: Callable[[], None]
                    ) -> Callable[[GateRequest], GateAnswer | None]:
    """A prompt that stops the live view while it asks, so the question is readable."""

    def ask(request: GateRequest) -> GateAnswer | None:
        pause()
        try:
            return _ask(request)
        finally:
            resume()

    return ask


def _ask(request: GateRequest) -> GateAnswer | None:
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
    choice = click.prompt("  approve, reject, or leave it waiting?",
                          type=click.Choice(["approve", "reject", "wait"]), default="wait",
                          err=True)
    if choice == "wait":
        return None
    inputs: dict[str, str] = {}
    if choice == "approve":
        for name, spec in request.inputs.items():
            choices = spec.get("choices")
            inputs[name] = click.prompt(
                f"  {name}{' (' + spec['description'] + ')' if spec.get('description') else ''}",
                type=click.Choice([str(c) for c in choices]) if choices else str,
                default=spec.get("default"), err=True)
    comment = click.prompt("  comment", default="", show_default=False, err=True) or None
    return GateAnswer(choice, inputs, comment)
