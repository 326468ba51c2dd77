"""`iacorch cancel RUN`: stop a running run, wherever its stages run."""

from __future__ import annotations

import os
import signal
import socket

import click

from iacorch.cli.session import open_store, store_option
from iacorch.errors import UsageError
from iacorch.model.status import RunStatus


@click.command()
@click.argument("run_id", metavar="RUN")
@store_option
def cancel(run_id: str, store_url: str | None) -> None:
    """Stop RUN as Ctrl-C would: its coordinator, when on this host, gets SIGINT; its
    stages on workers (PostgreSQL store) are asked to stop, and its coordinator on any
    host then stops the run. The run ends interrupted and resumable."""
    from iacorch.store.base import pid_alive
    from iacorch.store.postgres import PostgresStore

    store = open_store(store_url)
    run = store.get_run(run_id)
    if run.status is not RunStatus.RUNNING:
        raise UsageError(f"run {run.id} is {run.status.value}, not running",
                         hint="`iacorch runs` shows what is running")
    asked = 0
    if isinstance(store, PostgresStore):
        from iacorch.store.pg_leases import AttemptLeases
        from iacorch.workers.results import CANCELLED, LOST

        asked = AttemptLeases(store, LOST, CANCELLED).request_cancel(run_id=run.id)
    here = run.host == socket.gethostname() and pid_alive(run.pid)
    if here:
        os.kill(run.pid, signal.SIGINT)
    elif not asked:
        raise UsageError(f"run {run.id} is coordinated from {run.host} (pid {run.pid}) and "
                         "has no stage on a worker to stop from here",
                         hint=f"cancel it on {run.host}, or press Ctrl-C where it runs")
    done = [f"sent its coordinator (pid {run.pid}) SIGINT"] if here else []
    done += [f"asked {asked} of its stage attempt(s) on workers to stop"] if asked else []
    click.echo(f"run {run.id}: " + "; ".join(done) + f"; `iacorch resume {run.id}` continues it")


COMMANDS = [cancel]
