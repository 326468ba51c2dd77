"""Runs a resident process (`iacorch serve`, `iacorch listen`) starts, resumes or is
triggered to start, each on a worker thread.

The caller (a request, a queue message) waits only until its run is on record (the
engine's RUN_STARTED event), then goes on with the run id while the run goes on here: no
start-up per run. The runs are the CLI's runs: same store, same locks, same journal.
All of them share the process's one store (docs/decisions.md, "A long-running command
keeps one store connection").
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iacorch.engine.runtime import Runtime
from iacorch.engine.triggered import TriggeredRun
from iacorch.errors import UsageError
from iacorch.model.events import Event, EventKind
from iacorch.store.base import Store

_RECORD_WAIT = 30.0   # how long a request waits for its run to be on record


@dataclass
class _Launch:
    """One run handed to a worker, and what the request waiting for it learns."""

    on_record: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    result: Any = None

    def handle(self, event: Event) -> None:   # an EventSink
        if event.kind is EventKind.RUN_STARTED:
            self.on_record.set()


@dataclass(frozen=True, slots=True)
class Launched:
    """What a request answers: the run, and whether it is a duplicate delivery's."""

    run_id: str
    duplicate: bool = False
    recorded: bool = True      # False: still waiting for the runbook's lock


class Launcher:
    """A pool of worker threads driving runs; knows which runs this process drives."""

    def __init__(self, store: Store, state_dir: Path, *, workers: int = 16) -> None:
        self.store, self.state_dir = store, state_dir
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="iacorch-run")
        self._lock = threading.Lock()
        self._active: dict[str, Runtime] = {}

    def runtime(self, identity: str) -> Runtime:
        """A Runtime acting as `identity` on the server's store."""
        return Runtime(store=self.store, state_dir=self.state_dir, identity=identity)

    def launch(self, run_id: str, identity: str, work: Callable[[Runtime], Any],
               *, wait: float = _RECORD_WAIT) -> Launched:
        """Drive `work(runtime)` for run `run_id` on a worker; return once it is recorded.

        An error before the run is on record (locked, a missing secret, a duplicate
        delivery's verdict) is raised here, to the request.
        """
        runtime = self.runtime(identity)
        launch = _Launch()
        runtime.sinks.append(launch)
        with self._lock:
            if run_id in self._active:
                raise UsageError(f"run {run_id} is already being driven by this process",
                                 hint=f"follow it: iacorch logs {run_id} --follow")
            self._active[run_id] = runtime

        def drive() -> None:
            try:
                launch.result = work(runtime)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                launch.error = exc
            finally:
                with self._lock:
                    self._active.pop(run_id, None)
                launch.on_record.set()

        self._pool.submit(drive)
        if not launch.on_record.wait(wait):
            return Launched(run_id, recorded=False)
        if launch.error is not None:
            raise launch.error
        # a trigger's work returns a TriggeredRun: a duplicate names the run its first copy
        # started; a start or resume is on record under `run_id`
        if isinstance(launch.result, TriggeredRun) and launch.result.duplicate:
            return Launched(launch.result.run_id, duplicate=True)
        return Launched(run_id)

    def driving(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._active

    def close(self) -> None:
        """Stop: running stages get one SIGINT, as on Ctrl-C; runs stay resumable."""
        with self._lock:
            runtimes = list(self._active.values())
        for runtime in runtimes:
            runtime.interrupt_signal = signal.SIGTERM
            runtime.cancel.interrupt()
        self._pool.shutdown(wait=True)
