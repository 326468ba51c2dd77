"""Where stage attempts run: every attempt the engine makes goes through an Executor.

The runner's stage workers call `run` from their own threads: a worker that finishes a
stage takes the next ready one and runs it itself, with no hand-off through a central
loop. Gate pre-plans, undo, drift and `finally` submit to a `pool` of bounded size. A
distributed executor implements the same two calls (run = submit and wait).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

from iacorch.model.events import Event
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.process import CancelToken, ProcessRunner

from .stage_exec import run_stage_attempt

OnStart = Callable[[StageSpec], None]


class AttemptPool(Protocol):
    """At most a fixed number of attempts at once; closed when the caller is done."""

    def submit(self, spec: StageSpec, masker: Masker) -> Future[StageResult]: ...

    def __enter__(self) -> AttemptPool: ...

    def __exit__(self, *exc: object) -> None: ...


class Executor(Protocol):
    """Runs stage attempts: a pure function of the spec plus the executor's side effects."""

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        """Run one attempt to its end; called from a stage worker thread."""
        ...

    def pool(self, workers: int, on_start: OnStart | None = None) -> AttemptPool:
        """A pool that runs at most `workers` of the attempts submitted to it at once,
        calling `on_start(spec)` as each begins (not when it is submitted)."""
        ...


class LocalExecutor:
    """Attempts run in this process, with its process runner, cancel token and sinks."""

    def __init__(self, process: ProcessRunner, cancel: CancelToken,
                 emit: Callable[[Event], None]) -> None:
        self.process, self.cancel, self.emit = process, cancel, emit

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        """Run the attempt in the calling thread (no thread hop: the engine's hot path)."""
        return run_stage_attempt(spec, self.process, masker, self.cancel, self.emit)

    def pool(self, workers: int, on_start: OnStart | None = None) -> ThreadedPool:
        """A thread pool of `workers` threads over `run`."""
        return ThreadedPool(self, workers, on_start)


class ThreadedPool:
    """An AttemptPool of `workers` threads, each calling the executor's `run`."""

    def __init__(self, executor: Executor, workers: int,
                 on_start: OnStart | None = None) -> None:
        self._executor, self._on_start = executor, on_start
        self._threads = ThreadPoolExecutor(max_workers=max(1, workers),
                                           thread_name_prefix="stage")

    def submit(self, spec: StageSpec, masker: Masker) -> Future[StageResult]:
        return self._threads.submit(self._run, spec, masker)

    def _run(self, spec: StageSpec, masker: Masker) -> StageResult:
        if self._on_start is not None:
            self._on_start(spec)
        return self._executor.run(spec, masker)

    def __enter__(self) -> ThreadedPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._threads.shutdown(wait=True, cancel_futures=True)
