"""`iacorch listen`: start runs from SQS messages and S3 notifications, without a server."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from iacorch.cli.run_commands import _duration
from iacorch.cli.session import command_logger, store_option
from iacorch.errors import UsageError

if TYPE_CHECKING:
    from iacorch.engine.launcher import Launcher
    from iacorch.engine.runtime import Runtime
    from iacorch.engine.triggered import TriggeredRun, TriggerEvent
    from iacorch.triggers.sqs import Route

_RECORD_MARGIN = 30.0   # seconds past --lock-timeout a message waits for its run's record


def _starter(launcher: Launcher, root: Path, lock_timeout: float, log: logging.Logger
             ) -> Callable[[TriggerEvent], str]:
    """`start(event) -> run id`: returns once the run (and its delivery) are on record;
    the run goes on in one of the launcher's threads."""
    from iacorch.engine.runs import new_run_id
    from iacorch.engine.triggered import start_from_event

    def start(event: TriggerEvent) -> str:
        run_id = new_run_id(launcher.store.now())

        def work(runtime: Runtime) -> TriggeredRun:
            started = start_from_event(event, runtime, root=root, lock_timeout=lock_timeout,
                                       run_id=run_id)
            if started.outcome is not None:
                log.info("run %s %s in %.1fs", run_id, started.outcome.status.value,
                         started.outcome.elapsed)
            return started

        launched = launcher.launch(run_id, f"listen:{event.trigger}", work,
                                   wait=lock_timeout + _RECORD_MARGIN)
        if not launched.recorded:
            raise UsageError(f"run {run_id} is not on record yet (the runbook's lock)",
                             hint="the message comes back; its copy then finds the run")
        if launched.duplicate:
            log.info("delivery %s of %s was seen before: run %s, no second run",
                     event.delivery_id, event.source, launched.run_id)
        return launched.run_id

    return start


def _routes(runbooks: tuple[str, ...], root: Path) -> list[Route]:
    """Every `sqs:` and `s3:` trigger of the runbooks, each runbook named by its path in
    the project (as the deliveries it starts are counted)."""
    from iacorch.engine.triggered import find_trigger
    from iacorch.runbook.compiler import validate_model
    from iacorch.runbook.source import load_document
    from iacorch.triggers.sqs import Route

    routes = []
    for path in runbooks:
        try:
            inside = Path(path).resolve().relative_to(root).as_posix()
        except ValueError:
            raise UsageError(f"{path} is not inside the project {root}",
                             hint="listen to the runbooks of one project (the first "
                                  "runbook's), or set $IACORCH_PROJECT") from None
        for trigger in validate_model(load_document(path)).triggers:
            if trigger.sqs is None and trigger.s3 is None:
                continue
            if trigger.action == "drift":
                raise UsageError(f"{path}: trigger `{trigger.name}`: `action: drift` is not "
                                 "started from a queue",
                                 hint="use `apply` or `plan` (drift checks: `iacorch "
                                      "schedule run`)")
            find_trigger(root, inside, trigger.name)   # the path is one the engine accepts
            routes.append(Route(inside, trigger))
    if not routes:
        raise UsageError(f"no `sqs:` or `s3:` trigger in {', '.join(runbooks)}",
                         hint="add one, e.g. triggers: [{name: uploads, s3: {bucket: B, "
                              "queue: Q}, vars: {key: '{{ event.key }}'}}]")
    return routes


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
    from iacorch.engine.aws_clients import aws_client, describe_aws_error, is_aws_error
    from iacorch.engine.launch import open_for_runs
    from iacorch.engine.launcher import Launcher
    from iacorch.project import project_root
    from iacorch.triggers.sqs import QueueConsumer, queue_url

    if store_url and store_url.startswith("memory:"):
        raise UsageError("`listen` needs a store that outlives one run: deliveries are "
                         "remembered there", hint="leave out --store, or give a path")
    root = project_root(Path(runbooks[0]))
    routes = _routes(runbooks, root)
    log = command_logger("iacorch.listen")
    sqs = aws_client("sqs", read_timeout=wait_time + 10)
    by_queue: dict[str, list[Route]] = defaultdict(list)
    for route in routes:
        try:
            by_queue[queue_url(sqs, route.source.queue)].append(route)
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            what, hint = describe_aws_error(exc)
            raise UsageError(f"{route.runbook}: trigger `{route.trigger.name}`: queue "
                             f"{route.source.queue}: {what}", hint=hint) from None
    store, state_dir = open_for_runs(store_url, Path(runbooks[0]))
    launcher = Launcher(store, state_dir)
    start = _starter(launcher, root, lock_timeout, log)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    for url, queue_routes in by_queue.items():
        consumer = QueueConsumer(sqs, url, queue_routes, start, log, wait_seconds=wait_time)
        threading.Thread(target=consumer.run, args=(stop,), name=f"queue-{url}",
                         daemon=True).start()   # a long poll in progress is not waited for
        log.info("listening on %s for %s", url, ", ".join(
            f"{route.runbook}#{route.trigger.name}" for route in queue_routes))
    log.info("listener started (pid %d)", os.getpid())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        launcher.close()   # running stages get one SIGINT; the runs stay resumable
        store.close()
        log.info("listener stopped")


COMMANDS = [listen]
