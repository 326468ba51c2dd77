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
from iacorch.cli.session import (
    build_runtime,
    close_sinks,
    command_logger,
    open_store,
    store_option,
)
from iacorch.errors import UsageError

if TYPE_CHECKING:
    from iacorch.engine.runs import BegunRun
    from iacorch.engine.runtime import Runtime
    from iacorch.engine.triggered import TriggerEvent
    from iacorch.model.plan import Plan
    from iacorch.store.base import Store
    from iacorch.triggers.sqs import Route


class _ActiveRuns:
    """Runs this listener started, each driven in its own thread until it ends."""

    def __init__(self, log: logging.Logger) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._running: dict[str, tuple[threading.Thread, Runtime]] = {}

    def drive(self, begun: BegunRun) -> None:
        thread = threading.Thread(target=self._drive, args=(begun,), name=f"run-{begun.run_id}")
        with self._lock:
            self._running[begun.run_id] = (thread, begun.runner.rt)
        thread.start()

    def _drive(self, begun: BegunRun) -> None:
        runtime = begun.runner.rt
        try:
            outcome = begun.drive()
            self.log.info("run %s %s in %.1fs", outcome.run_id, outcome.status.value,
                          outcome.elapsed)
        except Exception:  # a bug in one run must not stop the listener
            self.log.exception("run %s: internal error", begun.run_id)
        finally:
            _close([runtime])
            with self._lock:
                self._running.pop(begun.run_id, None)

    def interrupt_and_wait(self) -> None:
        """Stop every run as Ctrl-C would (one SIGINT to each tool), and wait for them."""
        with self._lock:
            running = list(self._running.values())
        for _, runtime in running:
            runtime.interrupt_signal = signal.SIGTERM
            runtime.cancel.interrupt()
        for thread, _ in running:
            thread.join()


def _starter(store_url: str | None, store: Store, lock_timeout: float, runs: _ActiveRuns
             ) -> Callable[[TriggerEvent], str]:
    """`start(event) -> run id`: the run recorded with its delivery, then driven in a thread."""
    from iacorch.cli.notifications import run_end_sink
    from iacorch.engine.triggered import begin_triggered_run

    def start(event: TriggerEvent) -> str:
        made: list[Runtime] = []

        def runtime_for(plan: Plan) -> Runtime:
            runtime = build_runtime(store_url, json_events=False, plan=plan, quiet=True,
                                    live_view=False, store=store)
            runtime.interactive, runtime.prompt = False, None   # a gate suspends the run
            run_end_sink(plan, runtime)   # the runbook's `notify:` channels hear its end
            made.append(runtime)
            return runtime

        try:
            begun = begin_triggered_run(event, runtime_for, lock_timeout=lock_timeout)
        except BaseException:
            _close(made)
            raise
        if isinstance(begun, str):
            _close(made)
            runs.log.info("delivery %s of %s was seen before: run %s, no second run",
                          event.delivery_id, event.source, begun)
            return begun
        runs.drive(begun)
        return begun.run_id

    return start


def _close(runtimes: list[Runtime]) -> None:
    """What a run's runtime holds open: its sinks and its process runner (the store is the
    listener's)."""
    for runtime in runtimes:
        close_sinks(runtime)
        runtime.process.close()


def _routes(runbooks: tuple[str, ...]) -> list[Route]:
    """Every `sqs:` and `s3:` trigger of the runbooks."""
    from iacorch.engine.triggered import RUN_ACTIONS
    from iacorch.runbook.compiler import validate_model
    from iacorch.runbook.source import load_document
    from iacorch.triggers.sqs import Route

    routes = []
    for path in runbooks:
        runbook = validate_model(load_document(path))
        for trigger in runbook.triggers:
            if trigger.sqs is None and trigger.s3 is None:
                continue
            if trigger.action not in RUN_ACTIONS:
                raise UsageError(f"{path}: trigger `{trigger.name}`: `action: "
                                 f"{trigger.action}` is not started from a queue",
                                 hint="use `apply` or `plan` (drift checks: `iacorch "
                                      "schedule run`)")
            routes.append(Route(path, trigger))
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
    from iacorch.triggers.sqs import QueueConsumer, queue_url

    if store_url and store_url.startswith("memory:"):
        raise UsageError("`listen` needs a store that outlives one run: deliveries are "
                         "remembered there", hint="leave out --store, or give a path")
    routes = _routes(runbooks)
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
    # One store for every run: a second SQLite connection opened in this process while
    # another is in use could drop the other's file locks (POSIX locks are per process).
    store = open_store(store_url, Path(runbooks[0]))
    runs = _ActiveRuns(log)
    start = _starter(store_url, store, lock_timeout, runs)
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
        runs.interrupt_and_wait()
        store.close()
        log.info("listener stopped")


COMMANDS = [listen]
