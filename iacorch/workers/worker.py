"""The worker side: `iacorch worker --pool NAME` and the attempts it runs under leases.

Each delivered task names an attempt. The worker claims its lease (store.pg_leases):
only a RUN verdict starts the tool; WAIT polls until the copy holding a live lease
resolves it; DONE acknowledges. While the tool runs a heartbeat renews the lease; a
lost lease or a cancel request sends the tool one SIGINT (the CancelToken's rule), and
a result is recorded only under the token that started it.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from iacorch.engine.operations import plan_of_run
from iacorch.engine.stage_exec import run_stage_attempt
from iacorch.engine.stage_requests import StageRequest, open_request
from iacorch.errors import IacorchError, PolicyViolation, StoreError
from iacorch.model.events import Event
from iacorch.model.masking import Masker
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation
from iacorch.process import CancelToken, ProcessRunner
from iacorch.store.pg_leases import AttemptLeases, Claim, Verdict

from .app import TASK, make_app, queue_of
from .results import result_to_text

if TYPE_CHECKING:
    from iacorch.policy.guard import PolicyGuard

STORE_RETRY = 1.0      # seconds between tries while the database is unreachable
REAP_EVERY = 5.0


def _ignore(event: Event) -> None:
    """Stage events stay on the worker: its log file is in the shared directory."""


class AttemptRunner:
    """Runs delivered attempts: claim, run with a heartbeat, record under the token."""

    def __init__(self, leases: AttemptLeases, name: str, process: ProcessRunner,
                 policy: PolicyGuard | None = None) -> None:
        self.leases, self.name, self.process, self.policy = leases, name, process, policy

    def run(self, attempt_id: str, request: str) -> None:
        """Handle one delivered copy of the attempt; returns when it may be acknowledged."""
        claim = self._claim(attempt_id)
        if claim is None:
            return
        cancel = CancelToken()
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, name=f"lease-{attempt_id[:8]}",
                                args=(attempt_id, claim, cancel, stop), daemon=True)
        beat.start()
        try:
            result = self._execute(request, cancel)
        finally:
            stop.set()
            beat.join()
        try:
            text = result_to_text(result)
        except IacorchError as exc:  # sensitive outputs, and no $IACORCH_SEAL_KEY to seal them
            text = result_to_text(StageResult.failure(
                f"its result could not travel back: {exc.message}", hint=exc.hint))
        self._retry(lambda: self.leases.finish(attempt_id, claim.token, text),
                    deadline=claim.lease_seconds)

    def _execute(self, request: str, cancel: CancelToken) -> StageResult:
        masker = Masker([])
        try:
            spec, masker = open_request(StageRequest.from_json(request))
            refusal = self._policy_refusal(spec)
            if refusal is not None:
                return StageResult.failure(refusal, hint="the organisation's policy, as this "
                                           "worker has it, decides this")
            return run_stage_attempt(spec, self.process, masker, cancel, _ignore)
        except IacorchError as exc:  # a seal key or a secret this worker lacks
            return StageResult.failure(masker.mask(exc.message), hint=exc.hint)
        except Exception as exc:  # noqa: BLE001 - a driver bug fails the attempt, not the worker
            return StageResult.failure(masker.mask(f"the worker could not run it: {exc!r}"))

    def _policy_refusal(self, spec: StageSpec) -> str | None:
        """The worker's own policy set asked again before the tool starts (an apply's
        attempts; undo follows the run's). Audited with the set's hash, as the
        coordinator's check is."""
        if self.policy is None or spec.operation is not Operation.APPLY:
            return None
        store = self.leases.store
        run = store.get_run(spec.run_id)
        try:
            plan = plan_of_run(run, self.policy)
            statuses = {sid: record.status
                        for sid, record in store.stage_records(run.id).items()}
            refusal = self.policy.stage_refusal(plan, spec.stage_id, statuses,
                                                operation=str(run.operation))
        except PolicyViolation as exc:   # the whole plan breaks this worker's policy
            refusal = "; ".join(problem.message for problem in exc.problems)
        store.append_audit("policy_checked", run_id=run.id, stage_id=spec.stage_id,
                           actor=self.name, data={"policy_hash": self.policy.digest,
                                                  "allowed": refusal is None, "on": "worker",
                                                  **({"reason": refusal} if refusal else {})})
        return refusal

    def _claim(self, attempt_id: str) -> Claim | None:
        first = True
        while True:
            claim: Claim = self._retry(functools.partial(
                self.leases.claim, attempt_id, self.name, delivered=first))
            first = False
            if claim.verdict is Verdict.RUN:
                return claim
            if claim.verdict is Verdict.DONE:
                return None
            time.sleep(min(1.0, claim.lease_seconds / 3))

    def _heartbeat(self, attempt_id: str, claim: Claim, cancel: CancelToken,
                   stop: threading.Event) -> None:
        interval = claim.lease_seconds / 3
        renewed = time.monotonic()
        while not stop.wait(interval):
            try:
                beat = self.leases.heartbeat(attempt_id, claim.token)
            except StoreError:
                if time.monotonic() - renewed > claim.lease_seconds:
                    cancel.interrupt()  # the lease has surely expired: someone may take over
                    return
                continue
            if not beat.held or beat.cancel:
                cancel.interrupt()
                return
            renewed = time.monotonic()

    @staticmethod
    def _retry(call: Callable[[], Any], deadline: float | None = None) -> Any:
        """`call()`, tried again while the database is unreachable (until `deadline` s)."""
        started = time.monotonic()
        while True:
            try:
                return call()
            except StoreError:
                if deadline is not None and time.monotonic() - started > deadline:
                    raise
                time.sleep(STORE_RETRY)


def serve(pool: str, concurrency: int, store_url: str, broker_url: str,
          policy: PolicyGuard | None = None) -> None:
    """Run a worker of `pool` on the PostgreSQL store `store_url` until it is stopped
    (SIGTERM: after its running tasks)."""
    from iacorch.store.postgres import PostgresStore

    from .results import CANCELLED, LOST

    store = PostgresStore(store_url)
    leases = AttemptLeases(store, LOST, CANCELLED)
    name = f"{pool}@{socket.gethostname()}.{os.getpid()}"
    runner = AttemptRunner(leases, name, ProcessRunner(), policy)
    app = make_app(broker_url)
    app.task(name=TASK)(runner.run)
    threading.Thread(target=_reap, args=(leases,), name="reaper", daemon=True).start()
    app.worker_main(["--quiet", "worker", "-Q", queue_of(pool), "-c", str(concurrency),
                     "-P", "threads", "-n", name, "--without-gossip", "--without-mingle",
                     "--without-heartbeat", "-l", "WARNING"])


def _reap(leases: AttemptLeases) -> None:
    """Resolve leases nobody renews, even when no coordinator waits for them."""
    while True:
        time.sleep(REAP_EVERY)
        try:
            leases.reap(requeue=False)
        except StoreError:
            continue
