"""Leases on stage attempts shipped to workers: at most one tool start per attempt.

A broker redelivers a task whose worker did not acknowledge it in time, sometimes
while the first copy still runs. Each attempt therefore has one row in PostgreSQL:

- `enqueue` (coordinator): the row, `queued`.
- `claim` (worker, per delivered copy): in one transaction on the locked row, a queued
  attempt becomes `running` with `token = token + 1` and a lease; a copy that finds a
  live lease is told to WAIT (and asks again) until it resolves; a copy that finds the
  attempt resolved is told DONE. An expired lease resolves the attempt as interrupted
  (the tool may have run partly), unless it is `rerunnable` (plan, drift): then the
  copy takes it over with a new token.
- `heartbeat` renews the lease only while the token is still the row's; `finish`
  records the result only then (fencing: a stale holder changes nothing).
- `reap` resolves expired leases nobody renewed (the coordinator waiting on the
  attempt calls it, and so does every worker now and then).

Every resolution NOTIFYs CHANNEL with the attempt id, so a waiting coordinator wakes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from iacorch.store.postgres import PostgresStore

CHANNEL = "iacorch_attempts"
QUEUED, RUNNING, DONE = "queued", "running", "done"


class Verdict(enum.Enum):
    RUN = "run"      # this copy starts the tool, with `token`
    WAIT = "wait"    # another copy holds a live lease: ask again later
    DONE = "done"    # resolved already (or just now, as interrupted): acknowledge


@dataclass(frozen=True)
class Claim:
    verdict: Verdict
    token: int = 0
    lease_seconds: float = 0.0


@dataclass(frozen=True)
class Beat:
    held: bool        # the lease is still this token's
    cancel: bool      # the coordinator asked the attempt to stop


class AttemptLeases:
    """The attempt_leases table of a PostgresStore. `lost(attempt)` is the result text
    recorded for an attempt whose lease expired (the caller's codec makes it)."""

    def __init__(self, store: PostgresStore, lost: str, cancelled: str) -> None:
        self.store, self._lost, self._cancelled = store, lost, cancelled

    def enqueue(self, attempt_id: str, *, run_id: str, stage_id: str, pool: str,
                rerunnable: bool, lease_seconds: float) -> None:
        now, at = self.store.now_sql()
        self.store.query(
            "INSERT INTO attempt_leases (attempt_id, run_id, stage_id, pool, rerunnable, "
            f"state, lease_seconds, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, {now})",
            (attempt_id, run_id, stage_id, pool, rerunnable, QUEUED, lease_seconds, *at))

    def claim(self, attempt_id: str, worker: str, *, delivered: bool = False) -> Claim:
        """What this copy of the attempt may do (see the module's rules); `delivered`:
        it just arrived, so count it (redeliveries show as copies > 1)."""
        now, at = self.store.now_sql()
        started = self.store.query(  # the common case in one round trip
            f"UPDATE attempt_leases SET state = %s, token = token + 1, worker = %s, "
            f"starts = starts + 1, copies = copies + %s, heartbeat_at = {now} "
            "WHERE attempt_id = %s AND state = %s AND NOT cancel "
            "RETURNING token, lease_seconds",
            (RUNNING, worker, int(delivered), *at, attempt_id, QUEUED))
        if started:
            return Claim(Verdict.RUN, int(started[0][0]), float(started[0][1]))
        if delivered:
            self.store.query("UPDATE attempt_leases SET copies = copies + 1 "
                             "WHERE attempt_id = %s", (attempt_id,))
        with self.store.transaction():
            rows = self.store.query(
                "SELECT state, token, heartbeat_at, lease_seconds, rerunnable, cancel "
                "FROM attempt_leases WHERE attempt_id = %s FOR UPDATE", (attempt_id,))
            if not rows:
                return Claim(Verdict.DONE)  # not ours to run: no coordinator asked for it
            state, token, beat, lease, rerunnable, cancel = rows[0]
            clock = self.store.now()
            if state == DONE:
                return Claim(Verdict.DONE)
            if cancel:
                self._resolve(attempt_id, self._cancelled)
                return Claim(Verdict.DONE)
            if state == RUNNING and clock <= beat + lease:
                return Claim(Verdict.WAIT, lease_seconds=lease)
            if state == RUNNING and not rerunnable:
                self._resolve(attempt_id, self._lost)
                return Claim(Verdict.DONE)
            self.store.query(
                "UPDATE attempt_leases SET state = %s, token = token + 1, worker = %s, "
                "starts = starts + 1, heartbeat_at = %s WHERE attempt_id = %s",
                (RUNNING, worker, clock, attempt_id))
            return Claim(Verdict.RUN, token + 1, lease)

    def heartbeat(self, attempt_id: str, token: int) -> Beat:
        """Renew the lease if `token` still holds it."""
        now, at = self.store.now_sql()
        rows = self.store.query(
            f"UPDATE attempt_leases SET heartbeat_at = {now} WHERE attempt_id = %s AND "
            "token = %s AND state = %s RETURNING cancel", (*at, attempt_id, token, RUNNING))
        return Beat(held=bool(rows), cancel=bool(rows and rows[0][0]))

    def finish(self, attempt_id: str, token: int, result: str) -> bool:
        """Record the result if `token` still holds the lease; False: it was lost."""
        notified = self.store.query(
            "WITH done AS (UPDATE attempt_leases SET state = %s, result = %s "
            "WHERE attempt_id = %s AND token = %s AND state = %s RETURNING attempt_id) "
            "SELECT pg_notify(%s, attempt_id) FROM done",
            (DONE, result, attempt_id, token, RUNNING, CHANNEL))
        return bool(notified)

    def request_cancel(self, attempt_id: str | None = None, *,
                       run_id: str | None = None) -> int:
        """Ask an attempt (or every unresolved attempt of a run) to stop: a queued one
        resolves now, a running one's worker sees it at its next heartbeat and sends the
        tool SIGINT. How many attempts were asked."""
        column, key = ("attempt_id", attempt_id) if run_id is None else ("run_id", run_id)
        with self.store.transaction():
            rows = self.store.query(f"UPDATE attempt_leases SET cancel = TRUE WHERE {column} "
                                    "= %s AND state <> %s RETURNING attempt_id, state",
                                    (key, DONE))
            for found, state in rows:
                if state == QUEUED:
                    self._resolve(found, self._cancelled)
        return len(rows)

    def reap(self, attempt_id: str | None = None, *, requeue: bool) -> list[str]:
        """Resolve expired leases (of one attempt, or all) as interrupted; with `requeue`,
        expired rerunnable ones go back to queued instead, and their ids are returned
        for the caller to send again."""
        where = "" if attempt_id is None else " AND attempt_id = %s"
        params = () if attempt_id is None else (attempt_id,)
        requeued: list[str] = []
        with self.store.transaction():
            now = self.store.now()
            expired = self.store.query(
                "SELECT attempt_id, rerunnable FROM attempt_leases WHERE state = %s AND "
                f"heartbeat_at + lease_seconds < %s{where} FOR UPDATE SKIP LOCKED",
                (RUNNING, now, *params))
            for found, rerunnable in expired:
                if not rerunnable:
                    self._resolve(found, self._lost)
                elif requeue:
                    self.store.query("UPDATE attempt_leases SET state = %s WHERE "
                                     "attempt_id = %s", (QUEUED, found))
                    requeued.append(found)
        return requeued

    def collect(self, attempt_id: str) -> tuple[str, bool] | None:
        """The recorded result and whether a cancel was asked for, once: the result is
        cleared as it is read (it may be sealed secrets, which should not linger)."""
        rows = self.store.query(
            "UPDATE attempt_leases AS a SET result = NULL FROM (SELECT attempt_id, result "
            "FROM attempt_leases WHERE attempt_id = %s AND state = %s AND result IS NOT NULL "
            "FOR UPDATE) AS old WHERE a.attempt_id = old.attempt_id "
            "RETURNING old.result, a.cancel", (attempt_id, DONE))
        return (str(rows[0][0]), bool(rows[0][1])) if rows else None

    def _resolve(self, attempt_id: str, result: str) -> None:
        self.store.query("UPDATE attempt_leases SET state = %s, result = %s "
                         "WHERE attempt_id = %s", (DONE, result, attempt_id))
        self._notify(attempt_id)

    def _notify(self, attempt_id: str) -> None:
        self.store.query("SELECT pg_notify(%s, %s)", (CHANNEL, attempt_id))
