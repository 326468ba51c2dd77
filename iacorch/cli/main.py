"""The command line: the one error boundary and the one table of exit codes."""

from __future__ import annotations

import gc
import importlib
import os
import sys
import tempfile
import time
import traceback

import click

from iacorch import __version__
from iacorch.errors import ExitCode, IacorchError

# Command name -> module defining it (in iacorch.cli, or a full module name for another
# front door's command); modules load only when their command runs, so
# `iacorch --version` does not pay for pydantic, jinja2 or sqlite.
_COMMANDS = {
    "validate": "compile_commands", "graph": "compile_commands", "schema": "compile_commands",
    "apply": "run_commands", "resume": "run_commands", "destroy": "run_commands",
    "rollback": "run_commands", "plan": "run_commands", "retry": "run_commands",
    "mark-done": "run_commands",
    "runs": "inspect_commands", "show": "inspect_commands", "logs": "inspect_commands",
    "unlock": "inspect_commands", "audit": "inspect_commands", "approve": "inspect_commands",
    "reject": "inspect_commands",
    "drift": "drift_commands", "schedule": "schedule_commands", "listen": "listen_commands",
    "token": "token_commands", "serve": "iacorch.server.command", "policy": "policy_commands",
    "worker": "worker_commands", "cancel": "cancel_commands",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module_name = _COMMANDS.get(cmd_name)
        if module_name is None:
            return None
        module = importlib.import_module(module_name if "." in module_name
                                         else f"iacorch.cli.{module_name}")
        # What loaded so far (click, pydantic and the runbook schema, the command's modules)
        # stays until exit: keep the collector from walking it in every full collection
        # and at interpreter exit (~30 ms of an `apply`). main() undoes this for callers
        # that go on running Python.
        gc.freeze()
        return next(c for c in module.COMMANDS if c.name == cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="iacorch")
def cli() -> None:
    """iacorch: compile YAML runbooks into a graph of Terraform, Pulumi, Ansible,
    shell and HTTP stages, and run it with approvals, rollback and resume.

    \b
    Exit codes: 0 success/in sync, 1 run failed, 2 drift or changes present,
    3 waiting for approval, 4 rollback failed, 5 locked by another run,
    64 bad invocation, 65 invalid runbook, 69 a needed tool is missing,
    70 internal error, 74 state store unusable, 77 approval not allowed,
    78 policy set invalid, 130/143 interrupted.
    """


def _crash_log(text: str) -> str:
    from iacorch.project import state_dir

    try:
        directory = str(state_dir())
        os.makedirs(directory, exist_ok=True)
    except OSError:
        directory = tempfile.gettempdir()
    path = os.path.join(directory, f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `iacorch` console script: every exit goes through here.

    `argv` is for callers in Python (tests); their objects go back to the garbage
    collector when the command ends.
    """
    try:
        code = cli.main(args=argv, prog_name="iacorch", standalone_mode=False)
    except IacorchError as exc:
        click.echo(exc.render(), err=True)
        code = exc.exit_code
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.BAD_INVOCATION
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        code = ExitCode.INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the one boundary: anything else is a bug
        try:
            where = f"details in {_crash_log(traceback.format_exc())}"
        except OSError as log_error:
            where = f"no crash log could be written ({log_error.strerror}): {exc!r}"
        click.echo(f"iacorch: internal error (a bug: please report it); {where}", err=True)
        code = ExitCode.INTERNAL_ERROR
    finally:
        if argv is not None:
            gc.unfreeze()
    sys.exit(code if isinstance(code, int) else 0)
