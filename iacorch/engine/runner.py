"""The run loop: stage workers take what is ready, run it, record it, and take the next."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from typing import Any

from iacorch.model.plan import Plan, PlannedStage
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, RunStatus, StageStatus

from . import scheduler
from .run_state import RunOutcome
from .runtime import Runtime
from .stage_lifecycle import StageLifecycle

_POLL = 0.25


class Runner(StageLifecycle):
    """Runs one plan to an outcome on stage workers; all side effects come from the Runtime."""

    def __init__(self, plan: Plan, runtime: Runtime, run_id: str, **kwargs: Any) -> None:
        super().__init__(plan, runtime, run_id, **kwargs)
        self._turn = threading.Condition()   # guards the run state; held for one worker's turn
        self._running = 0
        self._crash: BaseException | None = None

    # -- the loop ------------------------------------------------------------
    def run(self) -> RunOutcome:
        """Run the plan on `concurrency` stage workers; the calling thread watches the deadline.

        Each worker records its last attempt and takes the next ready stage in one turn,
        under one lock and in one commit, then runs the attempt outside the lock: no hand-off
        through a central loop between one stage ending and the next one starting.
        """
        concurrency = self.concurrency
        workers: list[threading.Thread] = []
        try:
            for n in range(max(1, min(concurrency, len(self.selected)))):
                workers.append(threading.Thread(target=self._work, name=f"stage-{n}"))
                workers[-1].start()
            for worker in workers:
                while worker.is_alive():
                    worker.join(_POLL)
                    with self._turn:
                        self.check_deadline()
        finally:
            with self._turn:
                self.stopping = self.stopping or any(w.is_alive() for w in workers)
                self._turn.notify_all()
            for worker in workers:
                worker.join()
        if self._crash is not None:
            raise self._crash
        return self._outcome()

    def _work(self) -> None:
        """One stage worker: record what it ran, take what is ready, run it; until all is done."""
        last: tuple[str, StageResult] | None = None
        attempting = False
        try:
            while True:
                with self._turn:
                    spec, failed = None, None
                    if last is not None or self._may_take():
                        with self.rt.store.transaction():  # one commit per turn
                            if last is not None:
                                self._running -= 1
                                self._finish(*last)
                                last = None
                            try:
                                spec = self._take_ready() if self._crash is None else None
                            except Exception as exc:  # noqa: BLE001 - keep the end just recorded
                                failed = exc
                    if failed is not None:
                        raise failed
                    if isinstance(spec, PlannedStage):
                        # outside the commit: the store is not write-locked while tools plan
                        # and a person at the terminal thinks
                        self._open_gate(spec)
                        continue
                    if spec is None:
                        if self._running == 0 and not self._retries_pending() \
                                or self._crash is not None:
                            self._turn.notify_all()
                            return
                        self._turn.wait(self._wait_timeout())
                        continue
                    self._running += 1
                    if self._may_take():
                        self._turn.notify()  # more work than this worker can take
                attempting = True
                last = (spec.stage_id, self.rt.executor.run(spec, self.masker))
                attempting = False
        except BaseException as exc:  # a bug or a store failure: stop cleanly, raise in run()
            with self._turn:
                if attempting:
                    self._running -= 1     # the attempt never returned
                self._crash = self._crash or exc
                self.stopping = True
                self._turn.notify_all()

    def _may_take(self) -> bool:
        """Whether a turn could start or settle something (an idle turn writes nothing)."""
        if self._crash is not None or self.stopping:
            return False
        if self._new_failures or self.rt.cancel.interrupted:
            return True
        # ready stages include retries backing off; one of them may be all there is
        if self.queue.ready_count() > len(self.retry_at):
            return True
        return bool(self.retry_at) and min(self.retry_at.values()) <= time.monotonic()

    def _take_ready(self) -> StageSpec | PlannedStage | None:
        """The next attempt to run (or gate to open), settling on the way the stages that
        need neither."""
        while True:
            if self.rt.cancel.interrupted:
                self.stopping = True
            if self.stopping:
                return None
            if self._new_failures:
                self._new_failures = False
                for stage_id, culprit in scheduler.blocked_stages(
                        self.plan, self.state.statuses, self.selected).items():
                    self._settle(stage_id, StageStatus.SKIPPED, f"upstream {culprit} failed")
            now = time.monotonic()
            for stage_id in self.queue.ready():
                if self.retry_at.get(stage_id, 0.0) > now:
                    continue
                self.retry_at.pop(stage_id, None)
                self.queue.started(stage_id)
                spec = self._start(self.plan.stages[stage_id])
                if spec is not None:
                    return spec
                break  # it settled without running (skipped, gate, error): look again
            else:
                return None

    def _retries_pending(self) -> bool:
        return bool(self.retry_at) and not self.stopping

    def _wait_timeout(self) -> float:
        if not self._retries_pending():
            return _POLL
        return max(0.0, min(_POLL, min(self.retry_at.values()) - time.monotonic()))

    def run_finally(self, status: RunStatus) -> None:
        """Run the `finally:` stages once the run's outcome (rollback included) is known."""
        if not self.plan.finally_stages or status in (
                RunStatus.INTERRUPTED, RunStatus.WAITING_APPROVAL) or \
                self.options.operation is not Operation.APPLY:
            return
        running: dict[Future[StageResult], str] = {}
        with self.rt.executor.pool(self.concurrency) as pool:
            with self.rt.store.transaction():
                for stage in self.plan.finally_stages.values():
                    if self.state.statuses.get(stage.id, StageStatus.PENDING).is_done:
                        continue
                    spec = self._submit(stage, self.context_for(stage, status.value),
                                        Operation.APPLY)
                    if spec is not None:
                        running[pool.submit(spec, self.masker)] = stage.id
            for future, stage_id in running.items():
                result = future.result()
                with self.rt.store.transaction():
                    if result.ok:
                        self.state.outputs[stage_id] = dict(result.outputs)
                        self._settle(stage_id, StageStatus.SUCCEEDED, None, result)
                    else:
                        self._settle(stage_id, StageStatus.FAILED, result.error, result)

