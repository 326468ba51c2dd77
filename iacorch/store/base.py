"""The run store's contract: the records it keeps and the Store protocol.

Both implementations (sqlite for real use, memory for tests) turn records into
the same plain rows with the codec at the bottom of this module, so a record
read back looks the same whichever store wrote it: JSON-normalised mappings
(tuples become lists, keys become strings), statuses as enums.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from iacorch.errors import RunNotFoundError
from iacorch.model.status import Choice, Operation, Phase, RunStatus, StageStatus

PHASES = tuple(Phase)


class _Keep(enum.Enum):
    KEEP = "keep"

    def __repr__(self) -> str:
        return "KEEP"


KEEP = _Keep.KEEP
"""Default of `update_run` fields: leave the stored value as it is (None clears it)."""
Keep = Literal[_Keep.KEEP]


@dataclass(frozen=True)
class RunRecord:
    """One run of one runbook: what was asked, by whom, and how it ended."""

    id: str
    runbook: str
    runbook_path: str
    workspace: str
    plan_hash: str
    vars: Mapping[str, Any]                  # already masked by the caller
    status: RunStatus
    operation: Operation
    started_at: float
    finished_at: float | None = None
    user: str = ""
    host: str = ""
    pid: int = 0
    error: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageRecord:
    """One attempt of one stage in one phase of a run."""

    run_id: str
    stage_id: str
    attempt: int
    status: StageStatus
    started_at: float | None = None
    finished_at: float | None = None
    exit_code: int | None = None
    error: str | None = None
    outputs: Mapping[str, Any] = field(default_factory=dict)   # sensitive values removed
    sensitive_outputs: tuple[str, ...] = ()                     # names only
    changes: Mapping[str, Any] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    phase: Phase = Phase.FORWARD


@dataclass(frozen=True)
class LockHolder:
    """The run holding the lock of one runbook+workspace key."""

    key: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float
    lease_seconds: float

    def expired(self, now: float) -> bool:
        return now > self.heartbeat_at + self.lease_seconds


@dataclass(frozen=True)
class AuditEntry:
    """One link of the append-only audit chain (see iacorch.store.audit)."""

    seq: int
    time: float
    kind: str
    run_id: str | None
    stage_id: str | None
    actor: str | None
    data: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class StageRecordProblem:
    """A stage attempt whose row no longer matches what the audit chain recorded of it."""

    run_id: str
    stage_id: str
    phase: Phase
    attempt: int
    seq: int | None          # the audit entry holding its digest; None when no entry does
    reason: str

    def __str__(self) -> str:
        where = "" if self.phase == Phase.FORWARD else f", {self.phase}"
        return (f"run {self.run_id}, stage {self.stage_id} (attempt {self.attempt}{where}): "
                f"{self.reason}")


@dataclass(frozen=True)
class AuditVerification:
    """Result of checking the audit chain and the stage records it covers.

    head_hash is the last verified link. head_seen_at is the seq of the entry an
    expected head named, when one was given and found. stage_problems are stage
    rows that differ from their digests in the chain (checked only on a whole chain).
    """

    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None
    head_hash: str
    head_seen_at: int | None = None
    stage_problems: tuple[StageRecordProblem, ...] = ()


@dataclass(frozen=True)
class ApprovalRecord:
    run_id: str
    gate: str
    identity: str
    decision: Choice
    plan_hash: str
    time: float
    comment: str | None = None
    inputs: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DriftRecord:
    run_id: str
    runbook: str
    workspace: str
    stage_id: str
    status: str                              # in_sync | drifted | error
    findings: Mapping[str, Any]
    fingerprint: str
    time: float


@dataclass(frozen=True)
class TokenRecord:
    """An API token of one user: its public id and the SHA-256 of its secret, never the secret."""

    id: str
    user: str
    token_hash: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None


class Store(Protocol):
    """Where runs, stage attempts, locks, approvals, drift and the audit log live.

    Every method is atomic; `transaction()` groups several into one commit.
    Implementations are safe to call from several threads of one process.
    """

    read_only: bool   # opened for inspection only (a read-only mount): every write fails

    def create_run(self, run: RunRecord) -> None: ...

    def update_run(self, run_id: str, *, status: RunStatus,
                   finished_at: float | None | Keep = KEEP, error: str | None | Keep = KEEP,
                   details: Mapping[str, Any] | None = None) -> None:
        """Set the status; other fields change only when given (details are merged in)."""
        ...

    def get_run(self, run_id: str) -> RunRecord:
        """The run with this id or unique id prefix; RunNotFoundError otherwise."""
        ...

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
                  operation: str | None = None,
                  status: RunStatus | None = None) -> list[RunRecord]: ...

    def last_successful_run(self, runbook: str, workspace: str,
                            operation: str = "apply") -> RunRecord | None: ...

    def record_stage(self, record: StageRecord) -> None:
        """Insert or replace the attempt (run_id, stage_id, attempt, phase)."""
        ...

    def stage_records(self, run_id: str, phase: Phase = Phase.FORWARD) -> dict[str, StageRecord]:
        """Stage id -> its latest attempt in `phase`, in the order stages were first recorded."""
        ...

    def stage_attempts(self, run_id: str, stage_id: str) -> list[StageRecord]:
        """Every attempt of one stage: forward ones first, each phase by attempt."""
        ...

    def transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        """One commit for the writes inside; all rolled back if an exception escapes.

        `durable=True`: this commit, and every earlier one, survives power loss.

        A nested block joins the outer one. Other threads wait until it ends,
        so keep it short: never around a running stage.
        """
        ...

    def now(self) -> float:
        """The store's clock (lock leases are judged by it)."""
        ...

    def get_lock(self, key: str) -> LockHolder | None: ...

    def put_lock(self, holder: LockHolder) -> None:
        """Write the lock row as given; the take-over rule is `acquire_lock`'s, not the store's."""
        ...

    def renew_lock(self, key: str, run_id: str) -> bool: ...

    def release_lock(self, key: str, run_id: str) -> None: ...

    def force_unlock(self, key: str, *, actor: str, reason: str) -> LockHolder | None:
        """Remove whoever holds `key` and audit it (`force_unlock`); None if nobody did."""
        ...

    def list_locks(self) -> list[LockHolder]: ...

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry: ...

    def audit_entries(self, *, run_id: str | None = None) -> list[AuditEntry]: ...

    def audit_head(self, *, run_id: str | None = None) -> AuditEntry | None:
        """The newest audit entry (of one run), without reading the rest of the log."""
        ...

    def verify_audit(self, *, head: str | None = None) -> AuditVerification:
        """Check the chain, the stage records it covers, and (given) an expected head.

        `head` is a hash (a prefix of at least 12 hex digits) printed earlier; an
        entry with it must still be in the log, or entries were cut off its end.
        """
        ...

    def record_approval(self, approval: ApprovalRecord) -> None:
        """Store a decision. Not audited here: the caller appends its audit entry
        in the same transaction()."""
        ...

    def approvals(self, run_id: str, gate: str | None = None) -> list[ApprovalRecord]: ...

    def record_drift(self, record: DriftRecord) -> None: ...

    def drift_history(self, runbook: str, *, stage_id: str | None = None,
                      limit: int = 50) -> list[DriftRecord]: ...

    def claim_delivery(self, source: str, delivery_id: str, run_id: str) -> str | None:
        """Record that event `delivery_id` from trigger `source` starts `run_id`.

        None when the delivery is new; else the run id its first copy started (a
        redelivered webhook or queue message starts no second run). Call it in the
        transaction() that creates the run, so a crash keeps both or neither.
        """
        ...

    def add_token(self, token: TokenRecord) -> None:
        """Store a new API token (its hash; the caller audits it in the same transaction())."""
        ...

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        """The token whose secret hashes to `token_hash`, revoked or not; None if unknown."""
        ...

    def list_tokens(self) -> list[TokenRecord]:
        """Every token, oldest first."""
        ...

    def revoke_token(self, token_id: str, now: float) -> TokenRecord | None:
        """Mark the token revoked (once: a later call keeps the first time); None if unknown."""
        ...

    def close(self) -> None: ...


# --- rules both stores share ------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    if pid <= 0:
        return False  # os.kill(0, ...) would signal our own process group
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # exists, owned by someone else
    except OverflowError:
        return False
    return True


class LockVerdict(enum.StrEnum):
    """Why a lock that is held may be taken anyway."""

    SAME_OWNER = "same_owner"        # the holder itself asking again
    PID_DEAD = "pid_dead"            # a takeover: its process is gone from this host
    LEASE_EXPIRED = "lease_expired"  # a takeover: no heartbeat within the lease


def lock_verdict(holder: LockHolder, *, run_id: str, host: str, pid: int, now: float,
                 alive: Callable[[int], bool] = pid_alive) -> LockVerdict | None:
    """Why `run_id` at host:pid may take `holder`'s lock, or None when the holder keeps it."""
    if holder.run_id == run_id and holder.host == host and holder.pid == pid:
        return LockVerdict.SAME_OWNER
    if holder.host == host and not alive(holder.pid):
        return LockVerdict.PID_DEAD
    if holder.expired(now):
        return LockVerdict.LEASE_EXPIRED
    return None


def acquire_lock(store: Store, key: str, run_id: str, *, host: str, pid: int,
                 lease_seconds: float) -> LockHolder | None:
    """Take `key` for `run_id` at host:pid: None when acquired, else the live holder.

    The take-over rule lives here once, above every store: a holder whose pid is
    dead on this host, or whose lease expired, is taken over, and the takeover is
    audited (`lock_taken_over`) in the same transaction.
    """
    with store.transaction():
        now = store.now()
        holder = store.get_lock(key)
        acquired = now
        if holder is not None:
            verdict = lock_verdict(holder, run_id=run_id, host=host, pid=pid, now=now)
            if verdict is None:
                return holder
            if verdict is LockVerdict.SAME_OWNER:
                acquired = holder.acquired_at
            else:
                store.append_audit("lock_taken_over", run_id=run_id, actor=f"{host}:{pid}",
                                   data={"reason": verdict.value,
                                         "previous": lock_audit_data(holder)})
        store.put_lock(LockHolder(key=key, run_id=run_id, host=host, pid=pid,
                                  acquired_at=acquired, heartbeat_at=now,
                                  lease_seconds=float(lease_seconds)))
    return None


def check_phase(phase: Phase) -> None:
    if phase not in PHASES:
        raise ValueError(f"stage phase must be one of {', '.join(PHASES)}, not {phase!r}")


def run_not_found(run_id: str, matches: list[str]) -> RunNotFoundError:
    """The error for an unknown or ambiguous run id (prefix)."""
    if not matches:
        return RunNotFoundError(f"no run with id {run_id!r}",
                                hint="`iacorch runs` lists recent runs and their ids")
    shown = ", ".join(matches[:5]) + (", ..." if len(matches) > 5 else "")
    return RunNotFoundError(f"run id prefix {run_id!r} matches several runs: {shown}",
                            hint="give more characters of the id; `iacorch runs` lists them")


# --- codec: records <-> rows of plain values ----------------------------------------------

def dump_json(value: Any, what: str) -> str:
    """Canonical JSON text for a JSON column; TypeError names the field on bad data."""
    if not value and isinstance(value, dict | list | tuple):  # most columns, most of the time
        return "{}" if isinstance(value, dict) else "[]"
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{what} must be JSON data: {exc}") from exc


def load_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


RUN_COLUMNS = ("id", "runbook", "runbook_path", "workspace", "plan_hash", "vars", "status",
               "operation", "started_at", "finished_at", "user", "host", "pid", "error",
               "details")
STAGE_COLUMNS = ("run_id", "stage_id", "attempt", "phase", "status", "started_at",
                 "finished_at", "exit_code", "error", "outputs", "sensitive_outputs",
                 "changes", "details")
LOCK_COLUMNS = ("key", "run_id", "host", "pid", "acquired_at", "heartbeat_at", "lease_seconds")
AUDIT_COLUMNS = ("seq", "time", "kind", "run_id", "stage_id", "actor", "data", "prev_hash",
                 "hash")
APPROVAL_COLUMNS = ("run_id", "gate", "identity", "decision", "plan_hash", "time", "comment",
                    "inputs")
TOKEN_COLUMNS = ("id", "user", "token_hash", "created_at", "expires_at", "revoked_at")
DRIFT_COLUMNS = ("run_id", "runbook", "workspace", "stage_id", "status", "findings",
                 "fingerprint", "time")


def run_to_row(run: RunRecord) -> tuple[Any, ...]:
    return (run.id, run.runbook, run.runbook_path, run.workspace, run.plan_hash,
            dump_json(dict(run.vars), "run vars"), RunStatus(run.status).value, run.operation,
            run.started_at, run.finished_at, run.user, run.host, run.pid, run.error,
            dump_json(dict(run.details), "run details"))


def run_from_row(row: tuple[Any, ...]) -> RunRecord:
    (id_, runbook, path, workspace, plan_hash, vars_, status, operation, started, finished,
     user, host, pid, error, details) = row
    return RunRecord(id=id_, runbook=runbook, runbook_path=path, workspace=workspace,
                     plan_hash=plan_hash, vars=load_json(vars_), status=RunStatus(status),
                     operation=Operation(operation), started_at=started, finished_at=finished,
                     user=user, host=host, pid=pid, error=error, details=load_json(details))


def stage_to_row(rec: StageRecord) -> tuple[Any, ...]:
    check_phase(rec.phase)
    return (rec.run_id, rec.stage_id, rec.attempt, rec.phase, StageStatus(rec.status).value,
            rec.started_at, rec.finished_at, rec.exit_code, rec.error,
            dump_json(dict(rec.outputs), "stage outputs"),
            dump_json(list(rec.sensitive_outputs), "sensitive output names"),
            None if rec.changes is None else dump_json(dict(rec.changes), "stage changes"),
            dump_json(dict(rec.details), "stage details"))


def stage_from_row(row: tuple[Any, ...]) -> StageRecord:
    (run_id, stage_id, attempt, phase, status, started, finished, exit_code, error, outputs,
     sensitive, changes, details) = row
    return StageRecord(run_id=run_id, stage_id=stage_id, attempt=attempt,
                       status=StageStatus(status), started_at=started, finished_at=finished,
                       exit_code=exit_code, error=error, outputs=load_json(outputs),
                       sensitive_outputs=tuple(load_json(sensitive)),
                       changes=load_json(changes), details=load_json(details),
                       phase=Phase(phase))


def latest_attempts(records: list[StageRecord]) -> dict[str, StageRecord]:
    """Stage id -> its highest attempt, in the order the stages were first recorded."""
    latest: dict[str, StageRecord] = {}
    for rec in records:
        if rec.stage_id not in latest or rec.attempt > latest[rec.stage_id].attempt:
            latest[rec.stage_id] = rec
    return latest


def lock_from_row(row: tuple[Any, ...]) -> LockHolder:
    return LockHolder(*row)


def audit_from_row(row: tuple[Any, ...]) -> AuditEntry:
    seq, time_, kind, run_id, stage_id, actor, data, prev_hash, hash_ = row
    return AuditEntry(seq=seq, time=time_, kind=kind, run_id=run_id, stage_id=stage_id,
                      actor=actor, data=load_json(data), prev_hash=prev_hash, hash=hash_)


def approval_to_row(rec: ApprovalRecord) -> tuple[Any, ...]:
    return (rec.run_id, rec.gate, rec.identity, rec.decision, rec.plan_hash, rec.time,
            rec.comment, dump_json(dict(rec.inputs), "approval inputs"))


def approval_from_row(row: tuple[Any, ...]) -> ApprovalRecord:
    run_id, gate, identity, decision, plan_hash, time_, comment, inputs = row
    return ApprovalRecord(run_id=run_id, gate=gate, identity=identity, decision=Choice(decision),
                          plan_hash=plan_hash, time=time_, comment=comment,
                          inputs=load_json(inputs))


def drift_to_row(rec: DriftRecord) -> tuple[Any, ...]:
    return (rec.run_id, rec.runbook, rec.workspace, rec.stage_id, rec.status,
            dump_json(dict(rec.findings), "drift findings"), rec.fingerprint, rec.time)


def drift_from_row(row: tuple[Any, ...]) -> DriftRecord:
    run_id, runbook, workspace, stage_id, status, findings, fingerprint, time_ = row
    return DriftRecord(run_id=run_id, runbook=runbook, workspace=workspace, stage_id=stage_id,
                       status=status, findings=load_json(findings), fingerprint=fingerprint,
                       time=time_)


def lock_audit_data(holder: LockHolder) -> dict[str, Any]:
    return {"key": holder.key, "run_id": holder.run_id, "host": holder.host,
            "pid": holder.pid, "acquired_at": holder.acquired_at,
            "heartbeat_at": holder.heartbeat_at, "lease_seconds": holder.lease_seconds}
