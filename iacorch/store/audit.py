"""The audit log's hash chain: pure functions shared by every store.

Each entry's hash is sha256(prev_hash + canonical JSON of [seq, time, kind,
run_id, stage_id, actor, data]); the first entry's prev_hash is GENESIS_HASH.
Editing, deleting, reordering or duplicating an entry breaks the chain at the
first entry touched. What the chain alone cannot show: entries cut off the end
(the shorter chain is still valid) and a chain rewritten with every later hash
recomputed. Both need the head hash kept somewhere else (a run summary, a CI
log) to compare against.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from iacorch.store.base import AuditEntry, AuditVerification

GENESIS_HASH = "0" * 64


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
