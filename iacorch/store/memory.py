"""A Store in dictionaries, for tests of the engine: same rules, nothing on disk.

Records go through the same row codec as the sqlite store, so what comes back
is JSON-normalised exactly as it would be from state.db, and a caller that
mutates its own dict after writing does not change what was stored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from iacorch.model.status import Phase, RunStatus
from iacorch.store import audit as chain
from iacorch.store import base
from iacorch.store.base import (
    KEEP,
    ApprovalRecord,
    AuditEntry,
    AuditVerification,
    DriftRecord,
    Keep,
    LockHolder,
    RunRecord,
    StageRecord,
    TokenRecord,
)


class MemoryStore:
    """A Store whose state lives in this object and dies with it."""

    read_only = False

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.RLock()
        self._depth = 0
        self._runs: dict[str, tuple[Any, ...]] = {}            # insertion order = rowid order
        self._stages: dict[tuple[str, str, str, int], tuple[Any, ...]] = {}
        self._locks: dict[str, LockHolder] = {}
        self._audit: list[AuditEntry] = []
        self._approvals: list[tuple[Any, ...]] = []
        self._drift: list[tuple[Any, ...]] = []
        self._deliveries: dict[tuple[str, str], str] = {}
        self._tokens: dict[str, TokenRecord] = {}

    _TABLES = ("_runs", "_stages", "_locks", "_audit", "_approvals", "_drift", "_deliveries",
               "_tokens")

    @contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[None]:
        """Group the writes inside; on an exception put everything back as it was."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            saved = {name: getattr(self, name).copy() for name in self._TABLES}
            self._depth = 1
            try:
                yield
            except BaseException:
                for name, table in saved.items():
                    setattr(self, name, table)
                raise
            finally:
                self._depth = 0

    def close(self) -> None:
        """Nothing to release; kept for the protocol."""

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs -----------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        row = base.run_to_row(run)
        with self.transaction():
            if run.id in self._runs:
                raise ValueError(f"run {run.id} already exists")
            self._runs[run.id] = row

    def update_run(self, run_id: str, *, status: RunStatus,
                   finished_at: float | None | Keep = KEEP, error: str | None | Keep = KEEP,
                   details: Mapping[str, Any] | None = None) -> None:
        with self.transaction():
            if run_id not in self._runs:
                raise base.run_not_found(run_id, [])
            run = base.run_from_row(self._runs[run_id])
            merged = {**run.details, **(details or {})}
            row = list(self._runs[run_id])
            row[6] = RunStatus(status).value
            row[9] = run.finished_at if finished_at is KEEP else finished_at
            row[13] = run.error if error is KEEP else error
            row[14] = base.dump_json(merged, "run details")
            self._runs[run_id] = tuple(row)

    def _newest_first(self, runs: list[RunRecord]) -> list[RunRecord]:
        order = {run_id: i for i, run_id in enumerate(self._runs)}
        return sorted(runs, key=lambda r: (r.started_at, order[r.id]), reverse=True)

    def get_run(self, run_id: str) -> RunRecord:
        with self._lock:
            if run_id in self._runs:
                return base.run_from_row(self._runs[run_id])
            found = [base.run_from_row(row) for rid, row in self._runs.items()
                     if run_id and rid.startswith(run_id)]
        if len(found) != 1:
            raise base.run_not_found(run_id, [r.id for r in self._newest_first(found)])
        return found[0]

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
                  operation: str | None = None,
                  status: RunStatus | None = None) -> list[RunRecord]:
        with self._lock:
            runs = [base.run_from_row(row) for row in self._runs.values()]
            runs = self._newest_first(runs)
        return [r for r in runs
                if (runbook is None or r.runbook == runbook)
                and (operation is None or r.operation == operation)
                and (status is None or r.status == status)][:_slice_end(limit)]

    def last_successful_run(self, runbook: str, workspace: str,
                            operation: str = "apply") -> RunRecord | None:
        found = [r for r in self.list_runs(limit=len(self._runs), runbook=runbook,
                                           operation=operation, status=RunStatus.SUCCEEDED)
                 if r.workspace == workspace]
        return found[0] if found else None

    # --- stages ---------------------------------------------------------------------------

    def record_stage(self, record: StageRecord) -> None:
        row = base.stage_to_row(record)
        with self.transaction():
            self._stages[(record.run_id, record.phase, record.stage_id, record.attempt)] = row

    def stage_records(self, run_id: str, phase: Phase = Phase.FORWARD) -> dict[str, StageRecord]:
        base.check_phase(phase)
        with self._lock:
            rows = [row for key, row in self._stages.items() if key[:2] == (run_id, phase)]
        return base.latest_attempts([base.stage_from_row(row) for row in rows])

    def stage_attempts(self, run_id: str, stage_id: str) -> list[StageRecord]:
        with self._lock:
            rows = [row for key, row in self._stages.items()
                    if key[0] == run_id and key[2] == stage_id]
        records = [base.stage_from_row(row) for row in rows]
        return sorted(records, key=lambda r: (r.phase != "forward", r.attempt))

    # --- locks ----------------------------------------------------------------------------

    def now(self) -> float:
        return self._clock()

    def get_lock(self, key: str) -> LockHolder | None:
        return self._locks.get(key)

    def put_lock(self, holder: LockHolder) -> None:
        with self.transaction():
            self._locks[holder.key] = holder

    def renew_lock(self, key: str, run_id: str) -> bool:
        with self.transaction():
            holder = self._locks.get(key)
            if holder is None or holder.run_id != run_id:
                return False
            self._locks[key] = LockHolder(key, run_id, holder.host, holder.pid,
                                          holder.acquired_at, self._clock(),
                                          holder.lease_seconds)
            return True

    def release_lock(self, key: str, run_id: str) -> None:
        with self.transaction():
            holder = self._locks.get(key)
            if holder is not None and holder.run_id == run_id:
                del self._locks[key]

    def force_unlock(self, key: str, *, actor: str, reason: str) -> LockHolder | None:
        with self.transaction():
            holder = self._locks.pop(key, None)
            if holder is not None:
                self.append_audit("force_unlock", run_id=holder.run_id, actor=actor,
                                  data={"reason": reason, **base.lock_audit_data(holder)})
        return holder

    def list_locks(self) -> list[LockHolder]:
        with self._lock:
            return [self._locks[key] for key in sorted(self._locks)]

    # --- audit ----------------------------------------------------------------------------

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry:
        with self.transaction():
            last = self._audit[-1] if self._audit else None
            entry = chain.next_entry(last.seq if last else 0,
                                     last.hash if last else chain.GENESIS_HASH, kind,
                                     time=self._clock(), run_id=run_id, stage_id=stage_id,
                                     actor=actor, data=data)
            self._audit.append(entry)
        return entry

    def audit_entries(self, *, run_id: str | None = None) -> list[AuditEntry]:
        with self._lock:
            return [e for e in self._audit if run_id is None or e.run_id == run_id]

    def audit_head(self, *, run_id: str | None = None) -> AuditEntry | None:
        with self._lock:
            return next((e for e in reversed(self._audit)
                         if run_id is None or e.run_id == run_id), None)

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        with self._lock:
            entries, stages = list(self._audit), list(self._stages.values())
        return chain.verify_log(entries, stages, head)

    # --- approvals and drift --------------------------------------------------------------

    def record_approval(self, approval: ApprovalRecord) -> None:
        """Store a decision; the caller audits it in the same transaction()."""
        row = base.approval_to_row(approval)
        with self.transaction():
            self._approvals.append(row)

    def approvals(self, run_id: str, gate: str | None = None) -> list[ApprovalRecord]:
        with self._lock:
            found = [base.approval_from_row(row) for row in self._approvals]
        found = [a for a in found if a.run_id == run_id and (gate is None or a.gate == gate)]
        return sorted(found, key=lambda a: a.time)  # stable: ties keep insertion order

    def record_drift(self, record: DriftRecord) -> None:
        row = base.drift_to_row(record)
        with self.transaction():
            self._drift.append(row)

    def drift_history(self, runbook: str, *, stage_id: str | None = None,
                      limit: int = 50) -> list[DriftRecord]:
        with self._lock:
            found = [base.drift_from_row(row) for row in reversed(self._drift)]
        found = [d for d in found
                 if d.runbook == runbook and (stage_id is None or d.stage_id == stage_id)]
        return sorted(found, key=lambda d: d.time, reverse=True)[:_slice_end(limit)]

    def claim_delivery(self, source: str, delivery_id: str, run_id: str) -> str | None:
        """None for a new delivery, else the run its first copy started."""
        with self.transaction():
            first = self._deliveries.setdefault((source, delivery_id), run_id)
        return None if first == run_id else first

    # --- API tokens ---------------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        with self.transaction():
            self._tokens[token.id] = token

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        with self._lock:
            return next((t for t in self._tokens.values() if t.token_hash == token_hash), None)

    def list_tokens(self) -> list[TokenRecord]:
        with self._lock:
            return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        with self.transaction():
            token = self._tokens.get(token_id)
            if token is not None and token.revoked_at is None:
                token = self._tokens[token_id] = replace(token, revoked_at=now)
            return token


def _slice_end(limit: int) -> int | None:
    """SQL LIMIT semantics: a negative limit means no limit."""
    return None if limit < 0 else limit
