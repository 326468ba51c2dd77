"""The coordinator side: an Executor that ships attempts of pooled stages to workers.

`run` (called from the engine's stage worker threads, as for the local executor) writes
the attempt's lease row, sends the task to `pool-NAME` with no secret in clear
(stage_requests.to_request), then waits for the result the worker records in the
store: woken by NOTIFY, checking every `poll` seconds anyway. While it waits it reaps
the attempt's lease (a dead worker's non-idempotent stage comes back interrupted; a
plan or drift attempt is sent again) and passes a Ctrl-C on as a cancel request.
Stages without a pool run on the local executor.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from iacorch.engine.executor import Executor, OnStart, ThreadedPool
from iacorch.engine.stage_requests import to_request
from iacorch.errors import StoreError, UsageError
from iacorch.model.events import Event
from iacorch.model.masking import Masker
from iacorch.model.plan import Plan
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation
from iacorch.process import CancelToken
from iacorch.store.base import Store
from iacorch.store.pg_leases import CHANNEL, AttemptLeases

from .app import TASK, make_app, queue_of, visibility_timeout
from .output import AttemptOutput
from .results import CANCELLED, LOST, result_from_text

LEASE_ENV = "IACORCH_WORKER_LEASE"
DEFAULT_LEASE = 30.0
RERUNNABLE = (Operation.PLAN, Operation.DRIFT)


class CeleryExecutor:
    """Runs pooled stages' attempts on Celery workers, the rest on `local`."""

    def __init__(self, local: Executor, *, app: Any, leases: AttemptLeases,
                 pools: Mapping[str, str], cancel: CancelToken, lease_seconds: float,
                 output: AttemptOutput, poll: float = 1.0) -> None:
        self.local, self.app, self.leases = local, app, leases
        self.pools, self.cancel, self.output = dict(pools), cancel, output
        self.lease_seconds, self.poll = lease_seconds, poll
        self._waiting: dict[str, threading.Event] = {}
        self._listening = threading.Event()
        threading.Thread(target=self._listen, name="attempt-notices", daemon=True).start()
        self._listening.wait(5.0)  # else the first attempts would only be polled for

    def run(self, spec: StageSpec, masker: Masker) -> StageResult:
        """Run the attempt on its stage's pool (or here, for a stage without one)."""
        pool = self.pools.get(spec.stage_id)
        if pool is None:
            return self.local.run(spec, masker)
        request = to_request(spec, masker).to_json()
        attempt_id = uuid.uuid4().hex
        woken = self._waiting[attempt_id] = threading.Event()
        try:
            self.leases.enqueue(attempt_id, run_id=spec.run_id, stage_id=spec.stage_id,
                                pool=pool, rerunnable=spec.operation in RERUNNABLE,
                                lease_seconds=self.lease_seconds)
            try:
                self._send(attempt_id, request, pool)
            except StoreError as exc:  # nothing started: the stage fails, `resume` retries
                return StageResult.failure(exc.message, hint=exc.hint)
            self.output.follow(attempt_id, spec, masker)
            return self._result(attempt_id, request, pool, woken)
        finally:
            self._waiting.pop(attempt_id, None)
            self.output.done(attempt_id)

    def pool(self, workers: int, on_start: OnStart | None = None) -> ThreadedPool:
        """At most `workers` attempts at once, each shipped (or run here) by `run`."""
        return ThreadedPool(self, workers, on_start)

    def _send(self, attempt_id: str, request: str, pool: str) -> None:
        try:
            self.app.send_task(TASK, args=(attempt_id, request), task_id=attempt_id,
                               queue=queue_of(pool))
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds on a lost broker
            raise StoreError(f"cannot send a stage to worker pool {pool!r}: the broker "
                             f"did not take it ({type(exc).__name__})",
                             hint="check that $IACORCH_BROKER is up and reachable") from None

    def _result(self, attempt_id: str, request: str, pool: str,
                woken: threading.Event) -> StageResult:
        asked_to_stop = False
        while True:
            notified = woken.wait(self.poll)  # set by a NOTIFY since it was created
            woken.clear()
            try:
                collected = self.leases.collect(attempt_id)
                if collected is not None:
                    text, cancelled = collected
                    if cancelled:  # `iacorch cancel`, maybe from another host: stop the run
                        self.cancel.interrupt()
                    return result_from_text(text)
                if notified:
                    continue
                if self.cancel.interrupted and not asked_to_stop:
                    self.leases.request_cancel(attempt_id)
                    asked_to_stop = True
                for again in self.leases.reap(attempt_id, requeue=True):
                    self._send(again, request, pool)
            except StoreError:
                if self.cancel.interrupted:  # no database to wait on: stop here
                    return result_from_text(CANCELLED)

    def _listen(self) -> None:
        """Wake the waiter of each attempt the store NOTIFYs about (reconnecting)."""
        while True:
            try:
                with self.leases.store.listen(CHANNEL) as conn:
                    self._listening.set()
                    for notice in conn.notifies():
                        waiter = self._waiting.get(notice.payload)
                        if waiter is not None:
                            waiter.set()
            except Exception:  # noqa: BLE001 - database gone: waiters poll meanwhile
                time.sleep(self.poll)


def pooled_stages(plan: Plan) -> dict[str, str]:
    """Stage id -> its worker pool, for the stages that have one."""
    stages = [*plan.stages.values(), *plan.finally_stages.values()]
    return {stage.id: stage.pool for stage in stages if stage.pool}


def celery_executor(plan: Plan, local: Executor, store: Store, cancel: CancelToken,
                    broker_url: str, emit: Callable[[Event], None]) -> CeleryExecutor:
    """The executor of a run whose pooled stages go to workers through `broker_url`; the
    workers' tool output reaches `emit` as it is written."""
    from iacorch.store.postgres import PostgresStore

    if not isinstance(store, PostgresStore):
        raise UsageError("stages with `pool:` run on workers only with a PostgreSQL store "
                         "the workers share",
                         hint="use --store postgresql://... (or $IACORCH_STORE), or unset "
                              "$IACORCH_BROKER to run every stage here")
    pools = pooled_stages(plan)
    visibility = visibility_timeout()
    for stage_id in pools:
        timeout = plan.stages[stage_id].timeout if stage_id in plan.stages else \
            plan.finally_stages[stage_id].timeout
        if timeout is not None and timeout > visibility:
            raise UsageError(f"stage `{stage_id}` may run {timeout:g} s, longer than the "
                             f"broker's visibility timeout ({visibility:g} s)",
                             hint="raise $IACORCH_VISIBILITY_TIMEOUT (on the coordinator and "
                                  "the workers) above the longest stage timeout")
    lease = float(os.environ.get(LEASE_ENV) or DEFAULT_LEASE)
    leases = AttemptLeases(store, LOST, CANCELLED)
    return CeleryExecutor(local, app=make_app(broker_url), leases=leases, pools=pools,
                          cancel=cancel, lease_seconds=lease, output=AttemptOutput(emit))
