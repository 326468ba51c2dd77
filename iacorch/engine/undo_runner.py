"""Running undo steps (rollback or destroy) in reverse dependency order, in parallel."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, replace
from typing import Any

from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import Plan
from iacorch.model.results import StageResult
from iacorch.model.status import StageStatus
from iacorch.runbook.templating import TemplateProblem, Templates

from .executor import AttemptPool
from .journal import Journal
from .rendering import RunInfo, build_spec, render_action, stage_view, template_context
from .rollback import UndoKind, UndoStep, ready_to_undo
from .runtime import Runtime


@dataclass(frozen=True)
class UndoOutcome:
    undone: tuple[str, ...]
    failed: Mapping[str, str]
    not_undone: Mapping[str, str]      # stage -> why (no automatic undo, blocked by a failure)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class UndoInputs:
    """What templates see while undoing: this run's knowledge, or the last good run's."""

    vars: Mapping[str, Any]
    outputs: Mapping[str, Mapping[str, Any]]
    previous_vars: Mapping[str, Any] | None = None
    previous_outputs: Mapping[str, Mapping[str, Any]] | None = None


class UndoRunner:
    """Undoes `steps`, dependents first.

    `done`: stages an earlier rollback undid; `skipped`: stages a person took off the
    undo (stage -> why), left alone and reported. A failed undo holds back the stages
    it depends on; with `unrendered_blocks=False` (destroy) one that could not even be
    rendered is reported without holding anything back.
    """

    def __init__(self, plan: Plan, runtime: Runtime, run_id: str, *, steps: Mapping[str, UndoStep],
                 inputs: UndoInputs, secrets: Mapping[str, str], masker: Masker,
                 journal: Journal, done: set[str] | None = None,
                 skipped: Mapping[str, str] | None = None,
                 attempts: Mapping[str, int] | None = None,
                 concurrency: int | None = None, unrendered_blocks: bool = True) -> None:
        self.plan, self.rt, self.run_id, self.steps = plan, runtime, run_id, steps
        self.inputs, self.secrets, self.masker, self.journal = inputs, secrets, masker, journal
        self.done: set[str] = set(done or ()) | set(skipped or ())
        self.workers = concurrency or plan.concurrency
        self.templates = Templates()
        self.dependents = plan.dependents()
        self.unrendered_blocks = unrendered_blocks
        self.failed: dict[str, str] = {}
        self.blocking: set[str] = set()    # failed undos that hold back what they depend on
        self.not_undone: dict[str, str] = dict(skipped or {})
        self.undone: list[str] = []
        self.attempts: dict[str, int] = dict(attempts or {})

    def run(self) -> UndoOutcome:
        running: dict[Future[StageResult], str] = {}
        with self.rt.executor.pool(self.workers) as pool:
            while True:
                settled_before = len(self.done)
                if not self.rt.cancel.interrupted:
                    not_done = [s for s in self.steps if s not in self.done]
                    for stage_id in ready_to_undo(self.plan, not_done, self.done):
                        if stage_id in running.values() or len(running) >= self.workers:
                            continue
                        future = self._start(pool, stage_id)
                        if future is not None:
                            running[future] = stage_id
                if not running:
                    if len(self.done) > settled_before:
                        continue  # steps settled without running may free others
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    self._finish(running.pop(future), future.result())
        for stage_id in self.steps:
            if stage_id not in self.done and stage_id not in self.failed:
                self.not_undone.setdefault(stage_id, "not reached")
        return UndoOutcome(tuple(self.undone), dict(self.failed), dict(self.not_undone))

    def _start(self, pool: AttemptPool, stage_id: str) -> Future[StageResult] | None:
        step = self.steps[stage_id]
        blocker = next((d for d in self.dependents.get(stage_id, ()) if d in self.blocking),
                       None)
        if blocker is not None:
            self._record(stage_id, StageStatus.SKIPPED,
                         f"not undone: the undo of {blocker}, which depends on it, failed")
            self.not_undone[stage_id] = f"blocked by the failed undo of {blocker}"
            return None
        if step.kind is UndoKind.NOTHING:
            self._record(stage_id, StageStatus.SKIPPED, step.note)
            self.not_undone[stage_id] = step.note
            return None
        stage = self.plan.stages[stage_id]
        try:
            assert step.action_type is not None
            rendered = render_action(self.templates, step.action_type, step.action,
                                     self._context(step), self.secrets)
        except TemplateProblem as exc:
            self._fail(stage_id, f"template error in its undo: {exc.message}",
                       blocks=self.unrendered_blocks)
            return None
        attempt = self.attempts[stage_id] = self.attempts.get(stage_id, 0) + 1
        spec = build_spec(self.plan, stage, step.action_type, rendered, run_id=self.run_id,
                          operation=step.operation, attempt=attempt,
                          work_dir=str(self.rt.stage_dir(self.run_id, stage_id) / "undo"),
                          state_dir=str(self.rt.state_dir), secrets=self.secrets)
        self.journal.stage_started(stage_id, attempt, self.rt.clock())
        self.rt.emit(Event(EventKind.STAGE_STARTED, self.run_id, stage_id,
                           {"attempt": attempt, "action": str(step.action_type),
                            "operation": f"undo ({step.note})"}))
        return pool.submit(spec, self.masker)

    def _finish(self, stage_id: str, result: StageResult) -> None:
        if result.ok:
            self._record(stage_id, StageStatus.ROLLED_BACK, None, result)
            self.undone.append(stage_id)
        else:
            self._fail(stage_id, result.error or "failed", result)

    def _fail(self, stage_id: str, error: str, result: StageResult | None = None, *,
              blocks: bool = True) -> None:
        self.failed[stage_id] = self.masker.mask(error)
        if blocks:
            self.blocking.add(stage_id)
        self._record(stage_id, StageStatus.ROLLBACK_FAILED, error, result)

    def _record(self, stage_id: str, status: StageStatus, reason: str | None,
                result: StageResult | None = None) -> None:
        self.done.add(stage_id)
        now = self.rt.clock()
        self.journal.stage_finished(stage_id, self.attempts.get(stage_id, 1), status,
                                    started_at=None, finished_at=now, result=result,
                                    reason=reason)
        data: dict[str, Any] = {"status": status.value}
        if reason:
            data["reason"] = self.masker.mask(reason)
        self.rt.emit(Event(EventKind.STAGE_FINISHED, self.run_id, stage_id, data))

    def _context(self, step: UndoStep) -> dict[str, Any]:
        reapply = step.kind is UndoKind.REAPPLY and self.inputs.previous_vars is not None
        outputs = dict(self.inputs.previous_outputs or {})
        if not reapply:
            outputs.update(self.inputs.outputs)
        plan = self.plan
        if reapply:
            plan = replace(plan, vars=dict(self.inputs.previous_vars or {}))
        previous = {"vars": dict(self.inputs.previous_vars or {}),
                    "outputs": dict(self.inputs.previous_outputs or {})}
        run = RunInfo(self.run_id, "rolling_back", str(self.rt.state_dir), previous)
        statuses = {sid: StageStatus.SUCCEEDED for sid in outputs}
        return template_context(plan, run, stage_view(plan, outputs, statuses), self.secrets,
                                self.plan.stages[step.stage_id])
