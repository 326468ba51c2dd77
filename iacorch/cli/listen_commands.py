"""`iacorch listen`: start runs from SQS messages and S3 notifications, without a server."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import click

from iacorch.cli.run_commands import _duration
from iacorch.cli.session import command_logger, store_option
from iacorch.errors import UsageError


@click.command()
@click.argument("runbooks", nargs=-1, required=True, metavar="RUNBOOK...")
@store_option
@click.option("--lock-timeout", callback=_duration, default="10m", show_default=True,
              metavar="DURATION",
              help="How long an event waits for a run of the same runbook to finish.")
@click.option("--wait-time", type=click.IntRange(0, 20), default=20, show_default=True,
              help="SQS long polling: seconds one receive waits for a message.")
def listen(runbooks: tuple[str, ...], store_url: str | None, lock_timeout: float,
           wait_time: int) -> None:
    """Start runs from the runbooks' `sqs:` and `s3:` triggers until SIGTERM or Ctrl-C.

    One message, one run, even when SQS delivers it again; a message is deleted once its
    run is recorded. Needs the [aws] extra and AWS credentials (docs/aws.md).
    """
    from iacorch.engine.launch import open_for_runs
    from iacorch.engine.launcher import Launcher
    from iacorch.project import project_root
    from iacorch.triggers.listener import start_listening

    if store_url and store_url.startswith("memory:"):
        raise UsageError("`listen` needs a store that outlives one run: deliveries are "
                         "remembered there", hint="leave out --store, or give a path")
    log = command_logger("iacorch.listen")
    store, state_dir = open_for_runs(store_url, Path(runbooks[0]))
    launcher = Launcher(store, state_dir)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    listening = False
    try:
        start_listening(runbooks, project_root(Path(runbooks[0])), launcher, stop, log,
                        lock_timeout=lock_timeout, wait_seconds=wait_time)
        listening = True
        log.info("listener started (pid %d)", os.getpid())
        while not stop.wait(1.0):
            pass
    finally:
        stop.set()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        launcher.close()   # running stages get one SIGINT; the runs stay resumable
        store.close()
        if listening:
            log.info("listener stopped")


COMMANDS = [listen]
