"""`iacorch policy test DIR` and `iacorch policy explain RUNBOOK`."""

from __future__ import annotations

import click

from iacorch.cli.compile_commands import compile_plan, load_guard, policy_option, var_options
from iacorch.errors import UsageError


@click.group("policy")
def policy() -> None:
    """The organisation's policy (Rego): run its unit tests, explain what it does to a runbook."""


@policy.command("test")
@click.argument("directory", metavar="DIR")
def test(directory: str) -> None:
    """Run the policy's own unit tests (rules named test_*); exit 1 if one fails."""
    from iacorch.policy.policy_set import load_policy_set
    from iacorch.policy.testing import run_policy_tests

    outcomes = run_policy_tests(load_policy_set(directory))
    for outcome in outcomes:
        verdict = "PASS" if outcome.passed else ("ERROR" if outcome.error else "FAIL")
        click.echo(f"{verdict} {outcome.file}: {outcome.name}")
        if outcome.error:
            click.echo(f"  {outcome.error}")
    failed = [o for o in outcomes if not o.passed]
    click.echo(f"{len(outcomes) - len(failed)} passed, {len(failed)} failed", err=True)
    if not outcomes:
        raise UsageError(f"no test_* rules in {directory}",
                         hint="add `test_...` rules, e.g. in a file ending in _test.rego")
    if failed:
        raise click.exceptions.Exit(1)


@policy.command("explain")
@click.argument("runbook")
@var_options
@policy_option
def explain(runbook: str, var_flags: tuple[str, ...], var_files: tuple[str, ...],
            policy_dir: str | None) -> None:
    """Show which policy rules apply to which stages of RUNBOOK, and what they do."""
    from iacorch.policy.explain import explain as explain_plan

    guard = load_guard(policy_dir)
    if guard is None:
        raise UsageError("no policy to explain: give --policy DIR or set $IACORCH_POLICY_DIR")
    lines = explain_plan(guard, compile_plan(runbook, var_flags, var_files))
    click.echo(f"policy {guard.policy.directory} ({guard.policy.short_digest}) on {runbook}:")
    if not lines:
        click.echo("  no rule applies")
    for line in lines:
        detail = f": {line.detail}" if line.detail else ""
        click.echo(f"  {line.rule} {line.name} [{line.outcome}] {line.where}{detail}")


COMMANDS = [policy]
