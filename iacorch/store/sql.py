"""The queries both SQL stores ask, written once.

SQLite and PostgreSQL differ here only in the parameter mark (`?`, `%s`) and in the
column that keeps insertion order (SQLite's `rowid`, PostgreSQL's `n`). What does
differ between them (transactions, locking reads, the audit chain's serialisation,
their clocks) stays in sqlite.py and postgres.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Self

from iacorch.model.status import Phase, RunStatus
from iacorch.store import base
from iacorch.store.base import (
    ApprovalRecord,
    AuditEntry,
    DriftRecord,
    LockHolder,
    RunRecord,
    StageRecord,
    TokenRecord,
)


def columns(names: tuple[str, ...]) -> str:
    """A column list, each name quoted (`user` is a keyword in PostgreSQL)."""
    return ", ".join(f'"{n}"' for n in names)


RUN, STAGE, LOCK = columns(base.RUN_COLUMNS), columns(base.STAGE_COLUMNS), \
    columns(base.LOCK_COLUMNS)
AUDIT, APPROVAL = columns(base.AUDIT_COLUMNS), columns(base.APPROVAL_COLUMNS)
DRIFT, TOKEN = columns(base.DRIFT_COLUMNS), columns(base.TOKEN_COLUMNS)


def insert(table: str, names: tuple[str, ...]) -> str:
    """`INSERT INTO table (names) VALUES (?, ...)`: one `?` a column."""
    return f"INSERT INTO {table} ({columns(names)}) VALUES ({', '.join('?' * len(names))})"


STAGE_UPSERT = (insert("stages", base.STAGE_COLUMNS)
                + " ON CONFLICT (run_id, phase, stage_id, attempt) DO UPDATE SET "
                + ", ".join(f"{c} = excluded.{c}" for c in base.STAGE_COLUMNS[4:]))


def _token(row: tuple[Any, ...]) -> TokenRecord:
    return TokenRecord(*row)


class SqlQueries:
    """Reads and plain writes of the Store protocol over SQL. A store supplies
    `_records` (rows decoded, damage reported), `_write` (one statement, committed
    with the caller's transaction if there is one) and its dialect."""

    PARAM: ClassVar[str] = "?"     # the driver's parameter mark
    ORDER: ClassVar[str] = "rowid"  # the column that keeps insertion order

    def _records(self, decode: Callable[[tuple[Any, ...]], Any], sql: str,
                 params: tuple[Any, ...] = ()) -> list[Any]:
        raise NotImplementedError

    def _write(self, sql: str, params: tuple[Any, ...] = ()) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # the rest of the Store protocol, which each store writes in its own way
    def transaction(self, *, durable: bool = False) -> AbstractContextManager[None]:
        raise NotImplementedError

    def get_lock(self, key: str) -> LockHolder | None:
        raise NotImplementedError

    def append_audit(self, kind: str, *, run_id: str | None = None,
                     stage_id: str | None = None, actor: str | None = None,
                     data: Mapping[str, Any] | None = None) -> AuditEntry:
        raise NotImplementedError

    def _sql(self, text: str) -> str:
        """`text` with this driver's parameter marks (no literal holds a `?`)."""
        return text if self.PARAM == "?" else text.replace("?", self.PARAM)

    def _select(self, decode: Callable[[tuple[Any, ...]], Any], sql: str,
                params: tuple[Any, ...] = ()) -> list[Any]:
        return self._records(decode, self._sql(sql.replace("{order}", self.ORDER)), params)

    # --- runs -----------------------------------------------------------------------------

    def get_run(self, run_id: str) -> RunRecord:
        found = self._select(base.run_from_row, f"SELECT {RUN} FROM runs WHERE id = ?",
                             (run_id,))
        if not found and run_id:
            found = self._select(base.run_from_row,
                                 f"SELECT {RUN} FROM runs WHERE substr(id, 1, ?) = ? "
                                 "ORDER BY started_at DESC LIMIT 6", (len(run_id), run_id))
        if len(found) != 1:
            raise base.run_not_found(run_id, [r.id for r in found])
        return found[0]  # type: ignore[no-any-return]

    def list_runs(self, *, limit: int = 50, runbook: str | None = None,
                  operation: str | None = None,
                  status: RunStatus | None = None) -> list[RunRecord]:
        filters = {"runbook": runbook, "operation": operation,
                   "status": None if status is None else RunStatus(status).value}
        used = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = ?" for k in used) or "TRUE"
        return self._select(base.run_from_row,
                            f"SELECT {RUN} FROM runs WHERE {where} "
                            "ORDER BY started_at DESC, {order} DESC LIMIT ?",
                            (*used.values(), limit))

    def last_successful_run(self, runbook: str, workspace: str,
                            operation: str = "apply") -> RunRecord | None:
        found = self._select(base.run_from_row,
                             f"SELECT {RUN} FROM runs WHERE runbook = ? AND workspace = ? "
                             "AND operation = ? AND status = ? "
                             "ORDER BY started_at DESC, {order} DESC LIMIT 1",
                             (runbook, workspace, operation, RunStatus.SUCCEEDED.value))
        return found[0] if found else None

    # --- stages ---------------------------------------------------------------------------

    def record_stage(self, record: StageRecord) -> None:
        self._write(self._sql(STAGE_UPSERT), base.stage_to_row(record))

    def stage_records(self, run_id: str, phase: Phase = Phase.FORWARD) -> dict[str, StageRecord]:
        base.check_phase(phase)
        return base.latest_attempts(self._select(
            base.stage_from_row,
            f"SELECT {STAGE} FROM stages WHERE run_id = ? AND phase = ? ORDER BY {{order}}",
            (run_id, Phase(phase).value)))

    def stage_attempts(self, run_id: str, stage_id: str) -> list[StageRecord]:
        return self._select(base.stage_from_row,
                            f"SELECT {STAGE} FROM stages WHERE run_id = ? AND stage_id = ? "
                            "ORDER BY phase <> 'forward', attempt", (run_id, stage_id))

    # --- locks ----------------------------------------------------------------------------

    def release_lock(self, key: str, run_id: str) -> None:
        self._write(self._sql("DELETE FROM locks WHERE key = ? AND run_id = ?"), (key, run_id))

    def force_unlock(self, key: str, *, actor: str, reason: str) -> LockHolder | None:
        """Remove whoever holds `key` and audit it (`force_unlock`); None if nobody did."""
        with self.transaction():
            holder = self.get_lock(key)
            if holder is not None:
                self._write(self._sql("DELETE FROM locks WHERE key = ?"), (key,))
                self.append_audit("force_unlock", run_id=holder.run_id, actor=actor,
                                  data={"reason": reason, **base.lock_audit_data(holder)})
        return holder

    def list_locks(self) -> list[LockHolder]:
        return self._select(base.lock_from_row, f"SELECT {LOCK} FROM locks ORDER BY key")

    # --- audit ----------------------------------------------------------------------------

    def audit_entries(self, *, run_id: str | None = None) -> list[AuditEntry]:
        if run_id is None:
            return self._select(base.audit_from_row, f"SELECT {AUDIT} FROM audit ORDER BY seq")
        return self._select(base.audit_from_row,
                            f"SELECT {AUDIT} FROM audit WHERE run_id = ? ORDER BY seq",
                            (run_id,))

    def audit_head(self, *, run_id: str | None = None) -> AuditEntry | None:
        where, params = ("WHERE run_id = ? ", (run_id,)) if run_id is not None else ("", ())
        found = self._select(base.audit_from_row, f"SELECT {AUDIT} FROM audit {where}"
                             "ORDER BY seq DESC LIMIT 1", params)
        return found[0] if found else None

    # --- approvals and drift --------------------------------------------------------------

    def record_approval(self, approval: ApprovalRecord) -> None:
        """Store a decision; the caller audits it in the same transaction()."""
        self._write(self._sql(insert("approvals", base.APPROVAL_COLUMNS)),
                    base.approval_to_row(approval))

    def approvals(self, run_id: str, gate: str | None = None) -> list[ApprovalRecord]:
        where, params = ("run_id = ?", (run_id,)) if gate is None else (
            "run_id = ? AND gate = ?", (run_id, gate))
        return self._select(base.approval_from_row,
                            f"SELECT {APPROVAL} FROM approvals WHERE {where} "
                            "ORDER BY time, id", params)

    def record_drift(self, record: DriftRecord) -> None:
        self._write(self._sql(insert("drift", base.DRIFT_COLUMNS)), base.drift_to_row(record))

    def drift_history(self, runbook: str, *, stage_id: str | None = None,
                      limit: int = 50) -> list[DriftRecord]:
        where, params = ("runbook = ?", (runbook,)) if stage_id is None else (
            "runbook = ? AND stage_id = ?", (runbook, stage_id))
        return self._select(base.drift_from_row,
                            f"SELECT {DRIFT} FROM drift WHERE {where} "
                            "ORDER BY time DESC, id DESC LIMIT ?", (*params, limit))

    # --- API tokens -----------------------------------------------------------------------

    def add_token(self, token: TokenRecord) -> None:
        self._write(self._sql(insert("tokens", base.TOKEN_COLUMNS)),
                    (token.id, token.user, token.token_hash, token.created_at,
                     token.expires_at, token.revoked_at))

    def token_by_hash(self, token_hash: str) -> TokenRecord | None:
        found = self._select(_token, f"SELECT {TOKEN} FROM tokens WHERE token_hash = ?",
                             (token_hash,))
        return found[0] if found else None

    def list_tokens(self) -> list[TokenRecord]:
        return self._select(_token, f"SELECT {TOKEN} FROM tokens ORDER BY created_at, id")
