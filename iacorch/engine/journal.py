"""The run journal: every state transition goes to the store (and the audit log) before
anything depends on it. Sensitive output values never reach the store."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from iacorch.model.masking import Masker
from iacorch.model.results import StageResult
from iacorch.model.status import Phase, RunStatus, StageStatus
from iacorch.store.audit import COVERS_STAGES, stage_audit_data
from iacorch.store.base import RunRecord, StageRecord, Store

REDACTED = "(sensitive)"


def storable_outputs(outputs: Mapping[str, Any], sensitive: frozenset[str],
                     masker: Masker) -> dict[str, Any]:
    """Outputs as the store may keep them: sensitive values removed, secrets masked."""
    return {name: REDACTED if name in sensitive else masker.mask_value(value)
            for name, value in outputs.items()}


class DeliveryClaimed(Exception):  # noqa: N818 - an outcome, raised to roll back the run
    """The trigger delivery was seen before: the run it started is `first_run_id`."""

    def __init__(self, first_run_id: str) -> None:
        super().__init__(first_run_id)
        self.first_run_id = first_run_id


class Journal:
    """Writes runs, stage attempts and audit events for one run."""

    def __init__(self, store: Store, run_id: str, masker: Masker, actor: str,
                 phase: Phase = Phase.FORWARD) -> None:
        self.store, self.run_id, self.masker, self.actor = store, run_id, masker, actor
        self.phase = phase

    def start_run(self, record: RunRecord, delivery: tuple[str, str] | None = None) -> None:
        """Record the run; with `delivery` (source, id), claim it in the same commit, or
        raise DeliveryClaimed (nothing written) when an earlier copy claimed it."""
        with self.store.transaction(durable=True):
            self.store.create_run(record)
            if delivery is not None:
                first = self.store.claim_delivery(*delivery, record.id)
                if first is not None:
                    raise DeliveryClaimed(first)
            self.store.append_audit("run_started", run_id=self.run_id, actor=self.actor,
                                    data={"runbook": record.runbook, "operation": record.operation,
                                          "plan_hash": record.plan_hash,
                                          "workspace": record.workspace, COVERS_STAGES: True})

    def run_status(self, status: RunStatus, *, finished_at: float | None = None,
                   error: str | None = None, details: Mapping[str, Any] | None = None) -> None:
        changes: dict[str, Any] = {"details": details}
        if finished_at is not None:
            changes["finished_at"] = finished_at
        if error is not None:
            changes["error"] = self.masker.mask(error)
        elif status is RunStatus.SUCCEEDED:
            changes["error"] = None  # a resumed run that succeeded has no error left
        with self.store.transaction(durable=finished_at is not None
                                    or status is not RunStatus.RUNNING):
            self.store.update_run(self.run_id, status=status, **changes)
            self.store.append_audit(f"run_{status.value}", run_id=self.run_id, actor=self.actor,
                                    data={"error": self.masker.mask(error)} if error else {})

    def stage_started(self, stage_id: str, attempt: int, started_at: float) -> None:
        self.store.record_stage(StageRecord(self.run_id, stage_id, attempt, StageStatus.RUNNING,
                                            started_at=started_at, phase=self.phase))

    def stage_finished(self, stage_id: str, attempt: int, status: StageStatus, *,
                       started_at: float | None, finished_at: float,
                       result: StageResult | None = None, reason: str | None = None,
                       details: Mapping[str, Any] | None = None) -> None:
        """Record a final (or retried) attempt and its audit event in one commit."""
        outputs: dict[str, Any] = {}
        error = reason
        record_details: dict[str, Any] = dict(details or {})
        changes = None
        exit_code = None
        sensitive: frozenset[str] = frozenset()
        if result is not None:
            sensitive = result.sensitive_outputs
            outputs = storable_outputs(result.outputs, sensitive, self.masker)
            error = error or result.error
            exit_code = result.exit_code
            masked = self.masker.mask_value(dict(result.details))
            assert isinstance(masked, dict)
            record_details.update(masked)
            if result.unknown_outputs:
                record_details["outputs_after_apply"] = sorted(result.unknown_outputs)
            if result.hint:
                record_details["hint"] = self.masker.mask(result.hint)
            if result.output_tail:
                record_details["output_tail"] = [self.masker.mask(x) for x in result.output_tail]
            if result.changes is not None:
                changes = {"add": result.changes.add, "change": result.changes.change,
                           "destroy": result.changes.destroy,
                           "unchanged": result.changes.unchanged,
                           "resources": [[r.action, r.address] for r in result.changes.resources],
                           "outputs": list(result.changes.outputs),
                           "imported": result.changes.imported,
                           "moved": result.changes.moved,
                           "forgotten": result.changes.forgotten}
        record = StageRecord(
            self.run_id, stage_id, attempt, status, started_at=started_at,
            finished_at=finished_at, exit_code=exit_code,
            error=self.masker.mask(error) if error else None, outputs=outputs,
            sensitive_outputs=tuple(sorted(sensitive)), changes=changes,
            details=record_details, phase=self.phase)
        with self.store.transaction():
            self.store.record_stage(record)
            self.store.append_audit(f"stage_{status.value}", run_id=self.run_id,
                                    stage_id=stage_id, actor=self.actor,
                                    data={**stage_audit_data(record),
                                          **({"error": record.error} if record.error else {})})
