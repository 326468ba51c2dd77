"""Every `iacorch` command shown in the README parses against the real CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from iacorch.cli.main import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```(?:sh|yaml)\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.splitlines():
            line = line.split(" #")[0]
            found = re.search(r"(?:^|[;&|/]\s*|\s)(iacorch\s[^#|&;]*)", line)
            if found and "$(" not in found.group(1) and "${{" not in line:
                commands.append(found.group(1).strip())
    return commands


def test_the_readme_shows_commands():
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_parses(command):
    args = shlex.split(command)[1:]
    context = click.Context(cli, info_name="iacorch")
    command_object: click.Command | None = cli
    while isinstance(command_object, click.Group):   # `audit verify`, `schedule list`, ...
        name, args = args[0], args[1:]
        command_object = command_object.get_command(context, name)
        assert command_object is not None, f"unknown command in README: {command}"
    command_object.make_context(name, args, parent=context)  # raises on a bad option


@pytest.mark.parametrize("doc", [README, README.parent / "docs" / "runbook.md"],
                         ids=lambda p: p.name)
def test_the_exit_code_tables_show_every_code(doc):
    from iacorch.errors import ExitCode

    section = doc.read_text().split("| exit |" if doc == README else "## Exit codes")[1]
    shown = {int(code) for row in re.findall(r"^\| ([\d /]+) \|", section, re.M)
             for code in row.split("/")}
    assert shown == {int(code) for code in ExitCode}
