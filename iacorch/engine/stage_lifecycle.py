"""A run's stages from ready to settled: the transitions the run loop's workers make."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import NOT_SAFE_TO_DRY_RUN, Plan, PlannedStage
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import FailurePolicy, Operation, RunStatus, StageStatus
from iacorch.runbook.templating import TemplateProblem, Templates

from . import policies, scheduler
from .approved_plans import ApprovedPlans, discard_saved_plans
from .journal import Journal
from .plan_report import NOT_FULLY_PLANNED
from .rendering import (
    RunInfo,
    build_spec,
    render_action,
    settled_outputs,
    stage_view,
    template_context,
    update_stage_view,
)
from .rollback import TOOL_NOT_STARTED
from .run_state import RunOptions, RunOutcome, RunState
from .runtime import Runtime
from .stage_exec import LOG_ERROR

if TYPE_CHECKING:
    from .gates import GateKeeper



class StageLifecycle:
    """One run's stages and their transitions: start, settle, retry, fail, open a gate.

    Every transition happens inside a worker's turn (the Runner's lock and store
    transaction); the Runner (runner.py) adds the workers that take turns.
    """

    def __init__(self, plan: Plan, runtime: Runtime, run_id: str, *, secrets: Mapping[str, str],
                 masker: Masker, journal: Journal, state: RunState | None = None,
                 options: RunOptions | None = None, started_by: str = "",
                 previous: Mapping[str, Any] | None = None,
                 started_at: float | None = None, deadline_breached: bool = False) -> None:
        self.plan, self.rt, self.run_id = plan, runtime, run_id
        self.secrets, self.masker, self.journal = secrets, masker, journal
        self.state = state or RunState()
        self.options = options or RunOptions()
        self.started_by = started_by or runtime.identity
        self.previous = previous
        self.templates = Templates()
        self._gates: GateKeeper | None = None   # made at the first gate: most runs have none
        self.approved = ApprovedPlans()
        for gate_id, details in self.state.gate_details.items():
            if self.state.statuses.get(gate_id) is StageStatus.SUCCEEDED:
                self.approved.take(details)
        self.selected = scheduler.select_stages(plan, only=self.options.only,
                                                targets=self.options.targets)
        self.retry_at: dict[str, float] = {}
        self.stopping = False
        self.rollback_requested = False
        self.breached = deadline_breached   # said by an earlier process: not said again
        self._breached_before = deadline_breached
        self._new_failures = False   # with on_failure: continue, stages behind it get skipped
        self.queue = scheduler.ReadyQueue(plan, self.state.statuses, self.selected)
        outputs = self.state.outputs
        self._standins: dict[str, Any] = {}
        if self.options.operation is Operation.PLAN:
            # a dry run stands in the last successful run's outputs for stages not applied,
            # and with --mock the runbook's mock_outputs for stages that never ran
            mocks = {sid: dict(st.mock_outputs) for sid, st in plan.stages.items()
                     if self.options.mock and st.mock_outputs is not None}
            self._standins = {**mocks, **(self.previous or {}).get("outputs", {})}
            outputs = {**self._standins, **outputs}
        # plan only: stages whose plan said which outputs they will have -> those of them
        # that only an apply will tell
        self._planned_outputs: dict[str, frozenset[str]] = {}
        self.stage_view = stage_view(plan, outputs, self.state.statuses, self._pending_outputs)
        self.started_at = started_at if started_at is not None else runtime.clock()
        self.warnings: dict[str, str] = {}

    def _start(self, stage: PlannedStage) -> StageSpec | PlannedStage | None:
        """The attempt to run; a gate to open (returned, not opened: its plans and prompt
        take long, so the worker opens it after the turn's commit); None when it settled."""
        context = self.context_for(stage)
        try:
            if stage.when is not None and not self._truthy(stage.when, context):
                self._settle(stage.id, StageStatus.SKIPPED, "`when` is false")
                return None
            if self.options.operation is Operation.PLAN and not stage.dry_run:
                self._settle(stage.id, StageStatus.SKIPPED, NOT_SAFE_TO_DRY_RUN)
                return None
            if stage.approval is not None:
                if self.options.operation is Operation.APPLY:
                    return stage
                self._settle(stage.id, StageStatus.SKIPPED,
                             "approval gates are not asked in a plan")
                return None
        except TemplateProblem as exc:
            self._template_failed(stage, exc)
            return None
        return self._submit(stage, context, self.options.operation)

    def _template_failed(self, stage: PlannedStage, exc: TemplateProblem) -> None:
        if self.options.operation is Operation.PLAN and exc.after_apply:
            self._settle(stage.id, StageStatus.SKIPPED,
                         f"not fully planned: {exc.message}",
                         StageResult(StageStatus.SKIPPED, details={NOT_FULLY_PLANNED: True}))
        else:
            where = stage.reference_locations.get(exc.reference or "", stage.location)
            self._fail_unstarted(stage, f"template error in {where}: {exc.message}", exc.hint)

    def _fail_unstarted(self, stage: PlannedStage, error: str, hint: str | None = None) -> None:
        """A final failure before the stage's tool was started. When no earlier attempt of
        this run started it either, the record says so, and rollback leaves the stage be."""
        details = {} if self.state.attempts.get(stage.id) else {TOOL_NOT_STARTED: True}
        self._fail_final(stage, StageResult(StageStatus.FAILED, error=error, hint=hint,
                                            details=details), error)

    def _submit(self, stage: PlannedStage, context: Mapping[str, Any],
                operation: Operation) -> StageSpec | None:
        """Render the action and journal the start: the attempt's spec, ready to run."""
        assert stage.action_type is not None
        try:
            rendered = render_action(self.templates, stage.action_type, stage.action, context,
                                     self.secrets)
        except TemplateProblem as exc:
            self._template_failed(stage, exc)
            return None
        saved_plan = self.approved.plans.get(stage.id) if operation is Operation.APPLY else None
        if saved_plan is not None:
            swapped = self.approved.swapped(stage.id)
            if swapped is not None:
                self._fail_unstarted(stage, swapped)
                return None
        attempt = self.state.attempts.get(stage.id, 0) + 1
        self.state.attempts[stage.id] = attempt
        spec = build_spec(self.plan, stage, stage.action_type, rendered, run_id=self.run_id,
                          operation=operation, attempt=attempt,
                          work_dir=str(self.rt.stage_dir(self.run_id, stage.id)),
                          state_dir=str(self.rt.state_dir), secrets=self.secrets,
                          saved_plan=saved_plan)
        self.state.statuses[stage.id] = StageStatus.RUNNING
        self.state.started[stage.id] = self.rt.clock()
        self.journal.stage_started(stage.id, attempt, self.state.started[stage.id])
        self.rt.emit(Event(EventKind.STAGE_STARTED, self.run_id, stage.id,
                           {"attempt": attempt, "action": str(stage.action_type),
                            "operation": "finally" if stage.is_finally else str(operation)}))
        return spec

    def _finish(self, stage_id: str, result: StageResult) -> None:
        stage = self.plan.stages.get(stage_id) or self.plan.finally_stages[stage_id]
        attempt = self.state.attempts[stage_id]
        if LOG_ERROR in result.details:
            self.warnings[stage_id] = str(result.details[LOG_ERROR])
        if result.sensitive_outputs:
            self.masker.add(_flatten_values(result.outputs[k] for k in result.sensitive_outputs
                                            if k in result.outputs))
        if result.saved_plan and self.options.operation is Operation.PLAN:
            discard_saved_plans({stage_id: result.saved_plan})  # a dry run applies nothing
        if result.ok:
            self.state.outputs[stage_id] = self._outputs_of(stage_id, result)
            self._settle(stage_id, StageStatus.SUCCEEDED, None, result)
            return
        if result.interrupted or self.rt.cancel.interrupted:
            self._settle(stage_id, StageStatus.INTERRUPTED, result.error or "interrupted", result)
            return
        decision = policies.after_attempt(stage, attempt, result)
        if decision.retry and not self.stopping:
            self.journal.stage_finished(stage_id, attempt, StageStatus.FAILED,
                                        started_at=self.state.started.get(stage_id),
                                        finished_at=self.rt.clock(), result=result)
            self.state.statuses[stage_id] = StageStatus.PENDING
            self.queue.requeue(stage_id)
            self.retry_at[stage_id] = time.monotonic() + decision.delay
            self.rt.emit(Event(EventKind.STAGE_RETRY, self.run_id, stage_id,
                               {"attempt": attempt, "delay": decision.delay,
                                "error": self.masker.mask(result.error or "")}))
            return
        self._fail_final(stage, result, result.error or "failed")

    def _outputs_of(self, stage_id: str, result: StageResult) -> dict[str, Any]:
        """What downstream stages see of a finished stage's outputs.

        In a plan, a stage's own outputs (a Terraform plan's planned values) win; the
        stand-ins (last apply, mocks) fill in only what that plan cannot tell: the outputs
        it says only an apply will tell, or every output when it cannot say which it has.
        """
        if self.options.operation is not Operation.PLAN:
            return dict(result.outputs)
        stand_ins = self._standins.get(stage_id, {})
        unknown = result.unknown_outputs
        if unknown is None:
            return {**stand_ins, **result.outputs}
        outputs = {**{k: v for k, v in stand_ins.items() if k in unknown}, **result.outputs}
        self._planned_outputs[stage_id] = unknown - outputs.keys()
        return outputs

    def _pending_outputs(self, stage_id: str, status: StageStatus) -> frozenset[str] | None:
        """Outputs of the stage only an apply will tell; None: it may yet have any."""
        if self.options.operation is Operation.PLAN:
            return self._planned_outputs.get(stage_id)
        return settled_outputs(stage_id, status)

    def _fail_final(self, stage: PlannedStage, result: StageResult | None, error: str) -> None:
        self._settle(stage.id, StageStatus.FAILED, error, result)
        if stage.is_finally:
            return
        policy = policies.failure_policy(self.plan, stage)
        if policy is FailurePolicy.CONTINUE:
            self._new_failures = True
        else:
            self.stopping = True
        if policy is FailurePolicy.ROLLBACK and self.options.operation is Operation.APPLY:
            self.rollback_requested = True

    def _settle(self, stage_id: str, status: StageStatus, reason: str | None,
                result: StageResult | None = None) -> None:
        """Record a stage's final state for this run and tell the sinks."""
        self.state.statuses[stage_id] = status
        if status.is_done:
            self.queue.done(stage_id)
        update_stage_view(self.stage_view, self.plan, stage_id,
                          self.state.outputs.get(stage_id), status,
                          self._pending_outputs(stage_id, status))
        if reason and status is not StageStatus.SUCCEEDED:
            self.state.errors[stage_id] = self.masker.mask(reason)
        started = self.state.started.get(stage_id)
        now = self.rt.clock()
        self.journal.stage_finished(stage_id, self.state.attempts.get(stage_id, 0), status,
                                    started_at=started, finished_at=now, result=result,
                                    reason=reason)
        data: dict[str, Any] = {"status": status.value,
                                "elapsed": round(now - started, 3) if started else 0.0}
        if reason:
            data["reason"] = self.masker.mask(reason)
        if result is not None:
            if result.changes is not None:
                data["changes"] = str(result.changes)
            if result.hint:
                data["hint"] = self.masker.mask(result.hint)
            if result.output_tail and status is StageStatus.FAILED:
                data["tail"] = [self.masker.mask(line) for line in result.output_tail[-10:]]
        self.rt.emit(Event(EventKind.STAGE_FINISHED, self.run_id, stage_id, data))

    # -- approval gates ----------------------------------------------------
    def _open_gate(self, stage: PlannedStage) -> None:
        """Plan what is behind the gate, ask (or suspend), and settle the gate."""
        from .gates import GateKeeper, GateVerdict  # here: most runs open no gate

        if self._gates is None:
            self._gates = GateKeeper(self)   # the Runner is the gates' GateContext
        outcome = self._gates.open(stage)
        details = self.state.gate_details.get(stage.id, {})
        if outcome.verdict is GateVerdict.APPROVED:
            self.approved.take(details)
            self.state.outputs[stage.id] = dict(outcome.outputs)
            self._settle(stage.id, StageStatus.SUCCEEDED, outcome.reason,
                         StageResult(StageStatus.SUCCEEDED, outputs=outcome.outputs,
                                     details=details))
        elif outcome.verdict is GateVerdict.REJECTED:
            self._fail_final(stage, None, outcome.reason)
        elif outcome.verdict is GateVerdict.CANCELLED:
            self.stopping = True
            self._settle(stage.id, StageStatus.INTERRUPTED, outcome.reason)
        else:
            self.state.statuses[stage.id] = StageStatus.WAITING_APPROVAL
            self.journal.stage_finished(stage.id, 0, StageStatus.WAITING_APPROVAL,
                                        started_at=None, finished_at=self.rt.clock(),
                                        details=details)

    # -- helpers -------------------------------------------------------------
    @property
    def concurrency(self) -> int:
        """Stages (and gate pre-plans, `finally` stages) running at once."""
        return self.options.concurrency or self.plan.concurrency

    @property
    def gate_details(self) -> dict[str, dict[str, Any]]:
        """Each opened gate's hash, opening time and the plans it showed."""
        return self.state.gate_details

    def context_for(self, stage: PlannedStage | None, status: str = "running") -> dict[str, Any]:
        """The template context for `stage` given what the run knows now."""
        run = RunInfo(self.run_id, status, str(self.rt.state_dir), self.previous)
        return template_context(self.plan, run, self.stage_view, self.secrets, stage)

    def _truthy(self, when: str | bool, context: Mapping[str, Any]) -> bool:
        value = self.templates.render(when, context)
        if isinstance(value, str):
            return value.strip().lower() not in ("", "false", "no", "0", "none")
        return bool(value)

    def elapsed(self) -> float:
        """Seconds since the run started, across every process that worked on it."""
        return self.rt.clock() - self.started_at

    def check_deadline(self) -> bool:
        """Announce (event and audit) that the run is over its deadline, once per run;
        True when that happened now."""
        deadline = self.plan.deadline
        if deadline is None or self.breached or self.elapsed() <= deadline:
            return False
        self.breached = True
        self.rt.emit(Event(EventKind.DEADLINE_BREACHED, self.run_id, None,
                           {"deadline": deadline, "elapsed": self.elapsed()}))
        self.rt.store.append_audit("deadline_breached", run_id=self.run_id,
                                   data={"deadline": deadline})
        return True

    @property
    def breached_now(self) -> bool:
        """Whether this process, not an earlier one of the run, found the deadline passed."""
        return self.breached and not self._breached_before

    def _provisional_status(self) -> RunStatus:
        statuses = {sid: s for sid, s in self.state.statuses.items() if sid in self.plan.stages}
        if self.rt.cancel.interrupted or StageStatus.INTERRUPTED in statuses.values():
            return RunStatus.INTERRUPTED
        if StageStatus.FAILED in statuses.values():
            return RunStatus.FAILED
        if StageStatus.WAITING_APPROVAL in statuses.values():
            return RunStatus.WAITING_APPROVAL
        return RunStatus.SUCCEEDED

    def _outcome(self) -> RunOutcome:
        waiting = tuple(sid for sid, s in self.state.statuses.items()
                        if s is StageStatus.WAITING_APPROVAL)
        return RunOutcome(self.run_id, self._provisional_status(), dict(self.state.statuses),
                          dict(self.state.errors), self.elapsed(),
                          self.plan.deadline, waiting, warnings=dict(self.warnings))


def _flatten_values(values: Any) -> list[str]:
    import json

    found: list[str] = []
    for value in values:
        found.append(value if isinstance(value, str) else json.dumps(value))
        if isinstance(value, dict):
            found += _flatten_values(value.values())
        elif isinstance(value, list):
            found += _flatten_values(value)
    return found

