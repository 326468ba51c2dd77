"""The drift check: every provision/configure stage compared with reality, using the inputs
recorded by the last successful apply of that stage (no upstream stage is applied).

A drift run holds the runbook's lock like any run (a check during an apply would see a
half-made world), runs the drivers' read-only `drift` operation in parallel, and records
a run (operation "drift"), one DriftRecord per stage and audit events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, as_completed
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from iacorch.errors import UsageError
from iacorch.model.events import Event, EventKind
from iacorch.model.masking import Masker
from iacorch.model.plan import NOT_SAFE_TO_DRY_RUN, Plan, PlannedStage
from iacorch.model.results import StageResult, StageSpec
from iacorch.model.status import Operation, RunStatus, StageStatus
from iacorch.runbook.templating import TemplateProblem, Templates
from iacorch.store.base import DriftRecord, RunRecord, Store

from .drift_rules import CHECKED_KINDS, DriftStatus, StageDrift, classify, ignore_rules, is_new
from .journal import REDACTED, Journal
from .locks import RunLock, lock_key
from .rendering import RunInfo, build_spec, render_action, stage_view, template_context
from .runtime import Runtime
from .secrets import resolve_secrets

_HISTORY_RUNS = 100   # successful applies searched for a stage's last application


@dataclass(frozen=True)
class AppliedStage:
    """A stage's last successful application: the run, its vars, the stage's outputs, and
    the outputs of every stage that run finished (the upstream outputs this stage used)."""

    run_id: str
    vars: Mapping[str, Any]
    outputs: Mapping[str, Any]
    run_outputs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftReport:
    """The outcome of one drift check."""

    run_id: str
    runbook: str
    workspace: str
    stages: tuple[StageDrift, ...]
    started_at: float
    finished_at: float
    interrupted: bool = False

    def by_status(self, status: DriftStatus) -> list[StageDrift]:
        return [s for s in self.stages if s.status is status]

    @property
    def drifted(self) -> list[str]:
        return [s.stage_id for s in self.by_status(DriftStatus.DRIFTED)]

    @property
    def new_drift(self) -> list[StageDrift]:
        return [s for s in self.stages if s.new]

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run_id, "runbook": self.runbook, "workspace": self.workspace,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "summary": {s.value: len(self.by_status(s)) for s in DriftStatus},
                "stages": [s.to_dict() for s in self.stages]}


def stages_to_check(plan: Plan, selection: Sequence[str] = ()) -> list[PlannedStage]:
    """Provision and configure stages, or those named by `--stage` (a base id takes every
    for_each expansion); UsageError for a name that is no stage."""
    if not selection:
        return [s for s in plan.stages.values() if s.kind in CHECKED_KINDS]
    chosen: list[str] = []
    for name in selection:
        expanded = plan.expansions.get(name) or ((name,) if name in plan.stages else ())
        if not expanded:
            raise UsageError(f"--stage {name}: no such stage",
                             hint=f"stages: {', '.join(plan.expansions)}")
        chosen += [e for e in expanded if e not in chosen]
    return [plan.stages[sid] for sid in plan.stages if sid in chosen]


def last_applications(store: Store, plan: Plan) -> dict[str, AppliedStage]:
    """Stage id -> its most recent successful application in a successful apply run.

    Not just the last successful run: an `apply --target` (a remediation) records only
    the stages it ran, and the others keep the inputs of the run that last applied them.
    A destroy that succeeded since forgets everything applied before it.
    """
    destroyed_at = max((r.started_at for r in store.list_runs(
        limit=_HISTORY_RUNS, runbook=plan.name, operation="destroy", status=RunStatus.SUCCEEDED)
        if r.workspace == plan.workspace), default=None)
    found: dict[str, AppliedStage] = {}
    for run in store.list_runs(limit=_HISTORY_RUNS, runbook=plan.name, operation="apply",
                               status=RunStatus.SUCCEEDED):
        if run.workspace != plan.workspace:
            continue
        if destroyed_at is not None and run.started_at < destroyed_at:
            break
        done = {sid: dict(record.outputs) for sid, record in store.stage_records(run.id).items()
                if record.status in (StageStatus.SUCCEEDED, StageStatus.MARKED_DONE)}
        for stage_id, outputs in done.items():
            if stage_id not in found:
                found[stage_id] = AppliedStage(run.id, dict(run.vars), outputs, done)
    return found


def recorded_inputs(applied: Mapping[str, AppliedStage],
                    stage_id: str) -> dict[str, Mapping[str, Any]]:
    """Upstream outputs as the stage's last application saw them: those its run recorded,
    else (a stage that run did not finish) the stage's own last application's."""
    latest = {sid: a.outputs for sid, a in applied.items()}
    return {**latest, **applied[stage_id].run_outputs}


def check_drift(plan: Plan, runtime: Runtime, *, run_id: str, selection: Sequence[str] = (),
                lock_timeout: float = 0.0, today: date | None = None) -> DriftReport:
    """Run the drift check of `plan` under its lock and record everything it found."""
    rules = ignore_rules(plan.runbook.drift.ignore if plan.runbook is not None else ())
    stages = stages_to_check(plan, selection)
    secrets = resolve_secrets(plan.runbook.secrets, plan.root, plan.secret_locations) \
        if plan.runbook else {}
    masker = Masker(secrets.values())
    lock = RunLock(runtime.store, lock_key(plan.name, plan.workspace), run_id,
                   host=runtime.host, pid=runtime.pid)
    lock.acquire(wait=lock_timeout)
    try:
        journal = Journal(runtime.store, run_id, masker, runtime.identity)
        started = runtime.clock()
        journal.start_run(_run_record(plan, runtime, run_id, masker, started, selection))
        verdicts = _DriftCheck(plan, runtime, run_id, secrets, masker, journal).run(
            stages, rules, today or datetime.fromtimestamp(started).date())
        report = DriftReport(run_id, plan.name, plan.workspace, tuple(verdicts), started,
                             runtime.clock(), interrupted=runtime.cancel.interrupted)
        return _record(runtime, plan, report, journal)
    finally:
        lock.release()


class _DriftCheck:
    """One drift run's stages: render with recorded inputs, run in parallel, classify."""

    def __init__(self, plan: Plan, runtime: Runtime, run_id: str, secrets: Mapping[str, str],
                 masker: Masker, journal: Journal) -> None:
        self.plan, self.rt, self.run_id = plan, runtime, run_id
        self.secrets, self.masker, self.journal = secrets, masker, journal
        self.templates = Templates()
        self.applied = last_applications(runtime.store, plan)
        self._recorded_runs: dict[str, tuple[Plan, RunInfo, dict[str, Any]]] = {}

    def run(self, stages: Sequence[PlannedStage], rules: Sequence[Any],
            today: date) -> list[StageDrift]:
        """Check `stages`, at most `concurrency` at once; each is recorded as started when
        its check begins and as finished when it ends, whatever the order."""
        verdicts: dict[str, StageDrift] = {}
        running: dict[Future[StageResult], str] = {}
        started: dict[str, float] = {}

        def starting(spec: StageSpec) -> None:  # on the pool's thread
            started[spec.stage_id] = self.rt.clock()
            self.journal.stage_started(spec.stage_id, 1, started[spec.stage_id])
            self.rt.emit(Event(EventKind.STAGE_STARTED, self.run_id, spec.stage_id, {
                "attempt": 1, "action": str(self.plan.stages[spec.stage_id].action_type),
                "operation": "drift"}))

        with self.rt.executor.pool(self.plan.concurrency, on_start=starting) as pool:
            for stage in stages:
                spec_or_verdict = self._spec(stage)
                if isinstance(spec_or_verdict, StageDrift):
                    verdicts[stage.id] = self._settle(stage.id, spec_or_verdict,
                                                      self.rt.clock(), None)
                    continue
                running[pool.submit(spec_or_verdict, self.masker)] = stage.id
            for future in as_completed(running):
                stage_id = running[future]
                result = future.result()
                verdict = classify(stage_id, result, rules, today)
                verdicts[stage_id] = self._settle(stage_id, verdict, started[stage_id], result)
        return [verdicts[s.id] for s in stages]

    def _recorded_run(self, applied: AppliedStage,
                      stage_id: str) -> tuple[Plan, RunInfo, dict[str, Any]]:
        """The plan, run info and stage view of the inputs `applied`'s run used: the same
        for every stage that run applied, so made once per run, not once per stage (the
        view alone is O(stages))."""
        cached = self._recorded_runs.get(applied.run_id)
        if cached is None:
            recorded = dataclasses.replace(self.plan, vars={**self.plan.vars, **applied.vars})
            outputs = recorded_inputs(self.applied, stage_id)
            statuses = {sid: StageStatus.SUCCEEDED for sid in outputs}
            info = RunInfo(self.run_id, RunStatus.RUNNING.value, str(self.rt.state_dir),
                           {"id": applied.run_id, "vars": dict(applied.vars), "outputs": outputs})
            cached = recorded, info, stage_view(recorded, outputs, statuses)
            self._recorded_runs[applied.run_id] = cached
        return cached

    def _spec(self, stage: PlannedStage) -> Any:
        """The stage's StageSpec rendered with recorded inputs, or a verdict without a run."""
        if stage.action_type is None:
            return StageDrift(stage.id, DriftStatus.SKIPPED, hint="an approval gate")
        if not stage.dry_run:
            return StageDrift(stage.id, DriftStatus.SKIPPED, hint=NOT_SAFE_TO_DRY_RUN)
        applied = self.applied.get(stage.id)
        if applied is None:
            return StageDrift(stage.id, DriftStatus.ERROR, error="never applied",
                              hint=f"no successful `iacorch apply` of {self.plan.name} "
                                   f"({self.plan.workspace}) ran this stage; apply it first")
        recorded, info, view = self._recorded_run(applied, stage.id)
        context = template_context(recorded, info, view, self.secrets, stage)
        try:
            if stage.when is not None and not _truthy(self.templates.render(stage.when,
                                                                            context)):
                return StageDrift(stage.id, DriftStatus.SKIPPED, hint="`when` is false")
            rendered = render_action(self.templates, stage.action_type, stage.action, context,
                                     self.secrets)
        except TemplateProblem as exc:
            return StageDrift(stage.id, DriftStatus.ERROR,
                              error=f"template error in {stage.location}: {exc.message}")
        if REDACTED in repr(rendered):
            return StageDrift(stage.id, DriftStatus.ERROR,
                              error="its inputs include a sensitive output, which is never "
                                    "stored, so the recorded inputs are incomplete",
                              hint="check this stage with `iacorch plan` instead")
        return build_spec(recorded, stage, stage.action_type, rendered, run_id=self.run_id,
                          operation=Operation.DRIFT, attempt=1,
                          work_dir=str(self.rt.stage_dir(self.run_id, stage.id)),
                          state_dir=str(self.rt.state_dir), secrets=self.secrets)

    def _settle(self, stage_id: str, verdict: StageDrift, started: float,
                result: StageResult | None) -> StageDrift:
        verdict = _masked(verdict, self.masker)
        status = {DriftStatus.ERROR: StageStatus.FAILED,
                  DriftStatus.SKIPPED: StageStatus.SKIPPED}.get(verdict.status,
                                                                StageStatus.SUCCEEDED)
        if result is not None and (result.interrupted or self.rt.cancel.interrupted) \
                and verdict.status is DriftStatus.ERROR:
            status = StageStatus.INTERRUPTED
        now = self.rt.clock()
        self.journal.stage_finished(
            stage_id, 1 if result is not None else 0, status, started_at=started,
            finished_at=now, result=result, reason=verdict.error,
            details={"drift": {"status": verdict.status.value,
                               "findings": list(verdict.findings),
                               "acknowledged": list(verdict.acknowledged),
                               "not_checkable": list(verdict.not_checkable)}})
        reason = verdict.error or verdict.hint
        if verdict.status is DriftStatus.DRIFTED:
            reason = f"{len(verdict.findings)} finding(s)"
        if verdict.acknowledged:
            reason = f"{reason or 'in sync'}; {len(verdict.acknowledged)} acknowledged"
        self.rt.emit(Event(EventKind.STAGE_FINISHED, self.run_id, stage_id, {
            "status": verdict.status.value, "elapsed": round(now - started, 3),
            **({"reason": reason} if reason else {})}))
        return verdict


def _record(runtime: Runtime, plan: Plan, report: DriftReport,
            journal: Journal) -> DriftReport:
    """DriftRecords, "new or changed" against the previous record, audit, run status."""
    store = runtime.store
    stages: list[StageDrift] = []
    for verdict in report.stages:
        if verdict.status is DriftStatus.SKIPPED:
            stages.append(verdict)
            continue
        previous = previous_record(store, plan.name, plan.workspace, verdict.stage_id)
        verdict = dataclasses.replace(verdict, new=is_new(
            verdict, previous.status if previous else None,
            previous.fingerprint if previous else None))
        stages.append(verdict)
        with store.transaction():
            store.record_drift(DriftRecord(
                run_id=report.run_id, runbook=plan.name, workspace=plan.workspace,
                stage_id=verdict.stage_id, status=verdict.status.value,
                findings={"findings": list(verdict.findings),
                          "acknowledged": list(verdict.acknowledged), "error": verdict.error},
                fingerprint=verdict.fingerprint, time=report.finished_at))
            if verdict.status is DriftStatus.DRIFTED:
                store.append_audit("drift_detected", run_id=report.run_id,
                                   stage_id=verdict.stage_id, actor=runtime.identity,
                                   data={"fingerprint": verdict.fingerprint, "new": verdict.new,
                                         "findings": len(verdict.findings)})
            for ack in verdict.acknowledged:
                store.append_audit("drift_acknowledged", run_id=report.run_id,
                                   stage_id=verdict.stage_id, actor=runtime.identity,
                                   data={"finding": ack.get("address") or ack.get("task"),
                                         "reason": ack.get("reason"), "until": ack.get("until")})
        if verdict.new:
            runtime.emit(Event(EventKind.DRIFT_DETECTED, report.run_id, verdict.stage_id,
                               {"findings": list(verdict.findings),
                                "fingerprint": verdict.fingerprint}))
    report = dataclasses.replace(report, stages=tuple(stages))
    errors = [s for s in stages if s.status is DriftStatus.ERROR]
    status = RunStatus.INTERRUPTED if report.interrupted else (
        RunStatus.FAILED if errors else RunStatus.SUCCEEDED)
    summary = {"drifted": report.drifted, "new": [s.stage_id for s in report.new_drift],
               "errors": [s.stage_id for s in errors],
               "in_sync": [s.stage_id for s in report.by_status(DriftStatus.IN_SYNC)]}
    journal.run_status(status, finished_at=report.finished_at,
                       error="; ".join(f"{s.stage_id}: {s.error}" for s in errors) or None,
                       details={"drift": summary})
    return report


def previous_record(store: Store, runbook: str, workspace: str,
                    stage_id: str) -> DriftRecord | None:
    """The latest DriftRecord of this stage in this workspace, if any."""
    return next((r for r in store.drift_history(runbook, stage_id=stage_id, limit=20)
                 if r.workspace == workspace), None)


def _masked(verdict: StageDrift, masker: Masker) -> StageDrift:
    mask: Any = masker.mask_value
    return dataclasses.replace(
        verdict, findings=tuple(mask(dict(f)) for f in verdict.findings),
        acknowledged=tuple(mask(dict(f)) for f in verdict.acknowledged),
        not_checkable=tuple(mask(dict(t)) for t in verdict.not_checkable),
        error=masker.mask(verdict.error) if verdict.error else None,
        hint=masker.mask(verdict.hint) if verdict.hint else None)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "no", "0", "none")
    return bool(value)


def _run_record(plan: Plan, runtime: Runtime, run_id: str, masker: Masker, started: float,
                selection: Sequence[str]) -> RunRecord:
    return RunRecord(
        id=run_id, runbook=plan.name, runbook_path=str(plan.path.resolve()),
        workspace=plan.workspace, plan_hash=plan.plan_hash,
        vars=masker.mask_value(dict(plan.vars)),  # type: ignore[arg-type]
        status=RunStatus.RUNNING, operation=Operation.DRIFT, started_at=started,
        user=runtime.identity, host=runtime.host, pid=runtime.pid,
        details={"selection": {"stages": list(selection)}})
