"""Commands that only compile: validate, graph, schema."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from iacorch.errors import RunbookError, UsageError

if TYPE_CHECKING:
    from iacorch.model.plan import Plan

GRAPH_FORMATS = ("text", "mermaid", "dot", "json")


F = TypeVar("F", bound=Callable[..., Any])


def var_options(command: F) -> F:
    """--var and --var-file, shared by every command that compiles a runbook."""
    command = click.option("--var-file", "var_files", multiple=True, metavar="FILE",
                           help="YAML file of var values (repeatable).")(command)
    return click.option("--var", "var_flags", multiple=True, metavar="NAME=VALUE",
                        help="Set a runbook var (repeatable).")(command)


def compile_plan(runbook: str, var_flags: tuple[str, ...], var_files: tuple[str, ...]) -> Plan:
    """Compile a runbook file with the CLI's var flags."""
    from iacorch.engine.launch import compile_plan as compile_with
    from iacorch.runbook.variables import parse_var_flags

    return compile_with(runbook, parse_var_flags(var_flags), var_files)


@click.command()
@click.argument("runbooks", nargs=-1, required=True, metavar="RUNBOOK...")
@var_options
def validate(runbooks: tuple[str, ...], var_flags: tuple[str, ...],
             var_files: tuple[str, ...]) -> None:
    """Check runbooks: syntax, schema, templates and graph. Reports every problem of every
    runbook; exits 65 if one is invalid, 64 if one cannot be read."""
    from iacorch.drivers import missing_tools
    from iacorch.engine.launch import check_var_files
    from iacorch.runbook.variables import parse_var_flags

    parse_var_flags(var_flags)  # a bad flag is wrong for every runbook: say it once
    check_var_files(var_files)
    failed: list[RunbookError | UsageError] = []
    for runbook in runbooks:
        try:
            plan = compile_plan(runbook, var_flags, var_files)
        except (RunbookError, UsageError) as exc:
            failed.append(exc)
            click.echo(exc.render(), err=True)
            continue
        click.echo(f"ok: {runbook}: {len(plan.stages)} stages in {len(plan.layers)} layers, "
                   f"plan {plan.plan_hash[:12]}")
        for missing in missing_tools(plan):
            click.echo(f"warning: {runbook}: `{missing.tool}` was not found; stages "
                       f"{', '.join(missing.stages)} cannot run here ({missing.hint})", err=True)
    if failed:
        count = sum(len(exc.problems) for exc in failed)
        click.echo(f"{count} problem{'s' if count > 1 else ''} in {len(failed)} of "
                   f"{len(runbooks)} runbook{'s' if len(runbooks) > 1 else ''}", err=True)
        unreadable = any(isinstance(exc, UsageError) for exc in failed)
        raise click.exceptions.Exit(UsageError.exit_code if unreadable
                                    else RunbookError.exit_code)


@click.command()
@click.argument("runbook")
@click.option("--format", "output_format", type=click.Choice(GRAPH_FORMATS), default="text",
              show_default=True)
@var_options
def graph(runbook: str, output_format: str, var_flags: tuple[str, ...],
          var_files: tuple[str, ...]) -> None:
    """Show the stage graph: text layers, mermaid, dot or json."""
    from iacorch.cli.graph_render import RENDERERS

    plan = compile_plan(runbook, var_flags, var_files)
    click.echo(RENDERERS[output_format](plan))


@click.command()
@click.option("--kind", type=click.Choice(["runbook", "run-report"]), default="runbook",
              show_default=True, help="The runbook format, or the `--report run.json` format.")
def schema(kind: str) -> None:
    """Print a JSON Schema: the runbook format (for yaml-language-server) or the run report."""
    if kind == "run-report":
        from iacorch.report import RUN_REPORT_SCHEMA

        click.echo(json.dumps(RUN_REPORT_SCHEMA, indent=2))
        return
    from iacorch.model.runbook_schema import json_schema

    click.echo(json.dumps(json_schema(), indent=2))


COMMANDS = [validate, graph, schema]
