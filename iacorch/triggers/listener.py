"""Listening to the queues of runbooks' `sqs:` and `s3:` triggers, in a resident process.

`iacorch listen` and `iacorch serve --listen` both call `start_listening`: one consumer
thread per queue, each event started with `start_from_event` through the process's
launcher, so a message is deleted once its run is on record and the run goes on in one of
the launcher's worker threads.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iacorch.engine.aws_clients import aws_client, describe_aws_error, is_aws_error
from iacorch.errors import UsageError

from .sqs import QueueConsumer, Route, StartRun, queue_url

if TYPE_CHECKING:
    from iacorch.engine.launcher import Launcher
    from iacorch.engine.runtime import Runtime
    from iacorch.engine.triggered import TriggeredRun, TriggerEvent

_RECORD_MARGIN = 30.0   # seconds past the lock timeout a message waits for its run's record


def routes(runbooks: Sequence[str | Path], root: Path) -> list[Route]:
    """Every `sqs:` and `s3:` trigger of the runbooks, each runbook named by its path in
    the project `root` (as the deliveries it starts are counted)."""
    from iacorch.engine.triggered import find_trigger
    from iacorch.runbook.compiler import validate_model
    from iacorch.runbook.source import load_document

    found = []
    for path in runbooks:
        try:
            inside = Path(path).resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            raise UsageError(f"{path} is not inside the project {root}",
                             hint="listen to the runbooks of one project, or set "
                                  "$IACORCH_PROJECT") from None
        for trigger in validate_model(load_document(path)).triggers:
            if trigger.sqs is None and trigger.s3 is None:
                continue
            if trigger.action == "drift":
                raise UsageError(f"{path}: trigger `{trigger.name}`: `action: drift` is not "
                                 "started from a queue",
                                 hint="use `apply` or `plan` (drift checks: `iacorch "
                                      "schedule run`)")
            find_trigger(root, inside, trigger.name)   # the path is one the engine accepts
            found.append(Route(inside, trigger))
    if not found:
        raise UsageError(f"no `sqs:` or `s3:` trigger in {', '.join(map(str, runbooks))}",
                         hint="add one, e.g. triggers: [{name: uploads, s3: {bucket: B, "
                              "queue: Q}, vars: {key: '{{ event.key }}'}}]")
    return found


def starter(launcher: Launcher, root: Path, lock_timeout: float,
            log: logging.Logger) -> StartRun:
    """`start(event) -> run id`: returns once the run (and its delivery) are on record."""
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


def start_listening(runbooks: Sequence[str | Path], root: Path, launcher: Launcher,
                    stop: threading.Event, log: logging.Logger, *, lock_timeout: float,
                    wait_seconds: int = 20) -> None:
    """Check the triggers and their queues (UsageError naming the one that is wrong),
    then consume each queue on a daemon thread until `stop` is set."""
    found = routes(runbooks, root)
    sqs = aws_client("sqs", read_timeout=wait_seconds + 10)
    by_queue: dict[str, list[Route]] = defaultdict(list)
    for route in found:
        try:
            by_queue[queue_url(sqs, route.source.queue)].append(route)
        except Exception as exc:
            if not is_aws_error(exc):
                raise
            what, hint = describe_aws_error(exc)
            raise UsageError(f"{route.runbook}: trigger `{route.trigger.name}`: queue "
                             f"{route.source.queue}: {what}", hint=hint) from None
    start = starter(launcher, root, lock_timeout, log)
    for url, queue_routes in by_queue.items():
        consumer = QueueConsumer(sqs, url, queue_routes, start, log, wait_seconds=wait_seconds)
        threading.Thread(target=consumer.run, args=(stop,), name=f"queue-{url}",
                         daemon=True).start()   # a long poll in progress is not waited for
        log.info("listening on %s for %s", url, ", ".join(
            f"{route.runbook}#{route.trigger.name}" for route in queue_routes))
