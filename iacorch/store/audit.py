"""The audit log's hash chain: pure functions shared by every store.

Each entry's hash is sha256(prev_hash + canonical JSON of [seq, time, kind,
run_id, stage_id, actor, data]); the first entry's prev_hash is GENESIS_HASH.
Editing, deleting, reordering or duplicating an entry breaks the chain at the
first entry touched.

The entry written when a stage attempt ends carries a digest of the attempt's
row (`stage_audit_data`), so the chain covers stage results and outputs too:
`verify_log` recomputes every digest from the stages table.

What the chain alone cannot show: entries cut off the end (the shorter chain is
still valid) and a chain rewritten with every later hash recomputed. Both need
the head hash kept somewhere else (a run summary, a CI log), given back to
`verify_log` as `head`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from iacorch.model.status import Phase, StageStatus
from iacorch.store.base import (
    AuditEntry,
    AuditVerification,
    StageRecord,
    StageRecordProblem,
    audit_from_row,
    stage_from_row,
)

GENESIS_HASH = "0" * 64
MIN_HEAD_DIGITS = 12
COVERS_STAGES = "covers_stages"
"""Audit data key: every result of this run's stages has its digest in the chain."""
_NO_RESULT = (StageStatus.PENDING.value, StageStatus.RUNNING.value)


def canonical_json(value: Any) -> str:
    """The one JSON spelling of `value`: sorted keys, no spaces, ASCII only."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def entry_hash(prev_hash: str, seq: int, time: float, kind: str, run_id: str | None,
               stage_id: str | None, actor: str | None, data: Mapping[str, Any]) -> str:
    """The hash of one entry, chained to the hash of the entry before it."""
    body = canonical_json([seq, time, kind, run_id, stage_id, actor, data])
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def next_entry(prev_seq: int, prev_hash: str, kind: str, *, time: float,
               run_id: str | None = None, stage_id: str | None = None,
               actor: str | None = None, data: Mapping[str, Any] | None = None) -> AuditEntry:
    """The entry that follows the one with `prev_seq` and `prev_hash`.

    An empty log's "previous" entry is (0, GENESIS_HASH). `data` is normalised
    through canonical JSON first, so the entry hashes the same after any store
    reads it back.
    """
    try:
        normal = json.loads(canonical_json(dict(data or {})))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"audit data must be JSON data: {exc}") from exc
    seq = prev_seq + 1
    time = float(time)  # an int would hash differently once a REAL column gives it back
    digest = entry_hash(prev_hash, seq, time, kind, run_id, stage_id, actor, normal)
    return AuditEntry(seq=seq, time=time, kind=kind, run_id=run_id, stage_id=stage_id,
                      actor=actor, data=normal, prev_hash=prev_hash, hash=digest)


def entry_or_damaged(row: tuple[Any, ...]) -> AuditEntry:
    """Decode an audit row (base.AUDIT_COLUMNS); an undecodable one becomes an entry
    that fails its hash, so verification names it instead of crashing."""
    try:
        return audit_from_row(row)
    except (ValueError, TypeError):
        return AuditEntry(seq=row[0], time=0.0, kind="", run_id=None, stage_id=None,
                          actor=None, data={"unreadable": str(row[6])}, prev_hash=str(row[7]),
                          hash="")


def verify_chain(entries: Iterable[AuditEntry]) -> AuditVerification:
    """Check every link in seq order; name the first seq at which the chain breaks.

    The first bad seq is the seq that should come next where the chain stops
    being whole: a missing entry is named by its own seq, a duplicated or
    reordered one by the position it occupies.
    """
    prev_hash = GENESIS_HASH
    expected = 1
    for entry in entries:
        reason = _link_problem(entry, expected, prev_hash)
        if reason is not None:
            return AuditVerification(ok=False, checked=expected - 1, first_bad_seq=expected,
                                     reason=reason, head_hash=prev_hash)
        prev_hash = entry.hash
        expected += 1
    return AuditVerification(ok=True, checked=expected - 1, first_bad_seq=None, reason=None,
                             head_hash=prev_hash)


def _link_problem(entry: AuditEntry, expected: int, prev_hash: str) -> str | None:
    if entry.seq > expected:
        return (f"seq {expected} is missing: the entry after seq {expected - 1} "
                f"is seq {entry.seq} (entries were deleted)")
    if entry.seq < expected:
        return (f"seq {entry.seq} appears where seq {expected} should be "
                "(an entry was duplicated or reordered)")
    if entry.prev_hash != prev_hash:
        return (f"seq {expected} does not link to the entry before it "
                "(an earlier entry was removed, replaced or reordered)")
    try:
        digest = entry_hash(entry.prev_hash, entry.seq, entry.time, entry.kind, entry.run_id,
                            entry.stage_id, entry.actor, entry.data)
    except (TypeError, ValueError):
        digest = ""
    if digest != entry.hash:
        return f"seq {expected} does not match its hash (the entry was edited)"
    return None


# --- stage records covered by the chain --------------------------------------------------

def stage_digest(record: StageRecord) -> str:
    """sha256 of everything one stage attempt recorded (all but its key), as stored."""
    def number(value: float | None) -> float | None:  # REAL columns give back floats
        return None if value is None else float(value)

    body = [StageStatus(record.status).value, number(record.started_at),
            number(record.finished_at), None if record.exit_code is None else int(record.exit_code),
            record.error, dict(record.outputs), list(record.sensitive_outputs),
            None if record.changes is None else dict(record.changes), dict(record.details)]
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def stage_audit_data(record: StageRecord) -> dict[str, Any]:
    """Audit data binding a stage attempt's row to its entry (stage_id and run_id go
    on the entry itself); `verify_log` recomputes the digest from the stored row."""
    return {"attempt": record.attempt, "phase": record.phase, "record": stage_digest(record)}


def expected_head(text: str) -> str:
    """A head hash as a person gives it back: at least MIN_HEAD_DIGITS hex digits."""
    head = text.strip().lower()
    if not MIN_HEAD_DIGITS <= len(head) <= len(GENESIS_HASH) \
            or any(c not in "0123456789abcdef" for c in head):
        raise ValueError(f"{text!r} is not an audit head: give at least {MIN_HEAD_DIGITS} "
                         "hex digits of the hash a run printed")
    return head


def verify_log(entries: Iterable[AuditEntry], stage_rows: Iterable[tuple[Any, ...]],
               head: str | None = None) -> AuditVerification:
    """Verify the chain, then that it still holds `head`, then the stage rows it covers.

    `stage_rows` are rows of the stages table in base.STAGE_COLUMNS order, read in the
    same snapshot as `entries`. Stage rows are judged only against a whole chain.
    """
    log = list(entries)
    result = verify_chain(log)
    if not result.ok:
        return result
    if head is not None:
        wanted = expected_head(head)
        seen = 0 if GENESIS_HASH.startswith(wanted) else next(
            (e.seq for e in log if e.hash.startswith(wanted)), None)
        if seen is None:
            return replace(result, ok=False, reason=(
                f"the log ends at seq {result.checked} with head {result.head_hash[:16]}, but "
                f"you expected head {wanted}: entries were removed or this is another store"))
        result = replace(result, head_seen_at=seen)
    problems = stage_problems(log, stage_rows)
    if problems:
        return replace(result, ok=False, stage_problems=tuple(problems),
                       reason=f"{len(problems)} stage record(s) differ from the audit log")
    return result


def stage_problems(entries: Sequence[AuditEntry],
                   stage_rows: Iterable[tuple[Any, ...]]) -> list[StageRecordProblem]:
    """Stage rows that differ from their digests in the chain, rows the chain recorded
    that are gone, and results it never recorded.

    A row must match the latest digest written for its (run, phase, stage, attempt).
    In a run marked COVERS_STAGES, a row holding a result (any status but pending or
    running) must have one; runs from before digests existed are not held to that.
    """
    recorded: dict[tuple[str, str, str, int], tuple[int, Any]] = {}
    covered: set[str] = set()
    for entry in entries:
        if entry.run_id is None:
            continue
        if entry.data.get(COVERS_STAGES):
            covered.add(entry.run_id)
        attempt, phase = entry.data.get("attempt"), entry.data.get("phase", "forward")
        if entry.stage_id is not None and "record" in entry.data \
                and isinstance(attempt, int) and isinstance(phase, str):
            recorded[(entry.run_id, phase, entry.stage_id, attempt)] = (entry.seq,
                                                                        entry.data["record"])
    problems: list[StageRecordProblem] = []
    for row in stage_rows:
        run_id, stage_id, attempt, phase, status = row[:5]
        expected = recorded.pop((run_id, phase, stage_id, attempt), None)
        reason = _row_problem(row, expected, run_id in covered and status not in _NO_RESULT)
        if reason is not None:
            problems.append(StageRecordProblem(run_id, stage_id, Phase(phase), attempt,
                                               expected[0] if expected else None, reason))
    for (run_id, phase, stage_id, attempt), (seq, _) in recorded.items():
        problems.append(StageRecordProblem(run_id, stage_id, Phase(phase), attempt, seq,
                                           f"audit entry seq {seq} recorded it, but its row "
                                           "is gone (deleted)"))
    return problems


def _row_problem(row: tuple[Any, ...], expected: tuple[int, str] | None,
                 must_be_recorded: bool) -> str | None:
    if expected is None:
        if must_be_recorded:
            return (f"it holds a result ({row[4]}) that the audit log never recorded "
                    "(the row was added or re-keyed outside iacorch)")
        return None
    try:
        digest = stage_digest(stage_from_row(row))
    except (TypeError, ValueError):
        return f"its row can no longer be read; audit entry seq {expected[0]} recorded it"
    if digest != expected[1]:
        return (f"its row differs from what audit entry seq {expected[0]} recorded "
                "(status, outputs, changes, error or details were changed)")
    return None
